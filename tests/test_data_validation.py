"Property-based tests: malformed chat records and files are reported as sentences naming file, record and field, never as tracebacks."
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from qlora_nb.records import DataError, check_data, record_problems, ROLES
from conftest import run

text = st.text(alphabet=st.characters(blacklist_categories=('Cs',)), max_size=20)
json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3), max_leaves=6)
good_msg = st.fixed_dictionaries({'role': st.sampled_from(ROLES), 'content': text})
any_msg = st.one_of(good_msg, json_value, st.fixed_dictionaries({'role': json_value, 'content': json_value}))
record = st.one_of(json_value, st.fixed_dictionaries({'messages': st.lists(any_msg, max_size=4)}),
                   st.fixed_dictionaries({'messages': json_value}))

def valid(r):
    ms = r.get('messages') if isinstance(r, dict) else None
    return (isinstance(ms, list) and len(ms) > 0 and all(isinstance(m, dict) and m.get('role') in ROLES and isinstance(m.get('content'), str) for m in ms)
            and any(m['role'] == 'assistant' for m in ms) and called_before_results(ms))

def called_before_results(ms)->bool:
    "Every tool result follows an assistant turn with tool calls (these records never have any, so: no tool turns)."
    called = False
    for m in ms:
        if m['role'] == 'tool' and not called: return False
        called = bool(m.get('tool_calls')) or (called and m['role'] == 'tool')
    return True

@given(record)
@settings(max_examples=300, deadline=None)
def test_record_problems_iff_invalid(r):
    probs = record_problems(r)
    assert isinstance(probs, list) and all(isinstance(p, str) and p for p in probs)
    assert (probs == []) == valid(r)

@given(st.lists(record, min_size=1, max_size=6))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_files_report_every_bad_record(tmp_path, recs):
    for suffix in ('.jsonl', '.json'):
        p = tmp_path/f'chats{suffix}'
        p.write_text('\n'.join(json.dumps(r, ensure_ascii=False) for r in recs) if suffix == '.jsonl' else json.dumps(recs, ensure_ascii=False), encoding='utf-8')
        bad = [i for i, r in enumerate(recs) if not valid(r)]
        if not bad:
            assert check_data(p) == len(recs); continue
        with pytest.raises(DataError) as e: check_data(p)
        msg = str(e.value)
        for i in (bad[:5] if '… and' not in msg else bad[:1]):  # each bad record is named, by line (JSONL) or record index (JSON array), up to MAX_PROBLEMS problems
            assert (f'line {i+1}:' if suffix == '.jsonl' else f'record {i}:') in msg

@given(st.binary(max_size=60))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_bytes_give_data_error_or_count(tmp_path, b):
    for suffix in ('.jsonl', '.json'):
        p = tmp_path/f'x{suffix}'
        p.write_bytes(b)
        try: n = check_data(p)
        except DataError as e: assert str(p) in str(e)
        else: assert n >= 1

def test_limit_and_all_problems(tmp_path):
    p = tmp_path/'many.jsonl'
    p.write_text('\n'.join(['{"messages": [{"role": "usr", "content": "やあ"}]}'] * 30 + ['{"messages": ['] + ['']), encoding='utf-8')
    with pytest.raises(DataError) as e: check_data(p)
    msg = str(e.value)
    assert msg.startswith('31 problem(s)') and '… and 11 more.' in msg and 'line 1:' in msg

def test_empty_and_undecodable(tmp_path):
    (tmp_path/'e.jsonl').write_text('\n\n', encoding='utf-8')
    with pytest.raises(DataError, match='the file is empty'): check_data(tmp_path/'e.jsonl')
    (tmp_path/'b.json').write_bytes('[{"messages": "é"}]'.encode('latin-1'))
    with pytest.raises(DataError, match='not UTF-8'): check_data(tmp_path/'b.json')

def test_cli_bad_data_exit_2_nothing_written(tmp_path):
    (tmp_path/'bad.jsonl').write_text('{"messages": [{"role": "user", "content": "こんにちは"}]}\n{"messages": [}\n', encoding='utf-8')
    sets = ['--set', 'training_data_json_path=bad.jsonl', '--set', 'result_path=out/run', '--set', 'save_path=out/adapter']
    for cmd in ('inspect', 'train'):
        r = run(cmd, *sets, cwd=tmp_path, rc=2)
        assert 'bad.jsonl, line 1: no assistant turn' in r.stderr and 'bad.jsonl, line 2: invalid JSON' in r.stderr
        assert 'Traceback' not in r.stderr
    assert not (tmp_path/'out').exists()

def test_cli_inspect_reports(tmp_path):
    r = run('inspect', '--set', 'data.eval_fraction=0.1', cwd=tmp_path, rc=0)
    assert '275 rows to train on, 31 conversations to evaluate on' in r.stdout and '[[' in r.stdout and 'Trained on:' in r.stdout

def test_train_logs_eval_loss(tmp_path):
    from qlora_nb.config import load_config
    from qlora_nb.train import train
    cfg = load_config(overrides=[f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter', 'data.eval_fraction=0.1',
                                 'training.max_steps=4', 'training.logging_steps=2', 'training.per_device_train_batch_size=4',
                                 'training.gradient_accumulation_steps=1', 'training.save_steps=100', 'data.max_length=128'])
    s = train(cfg, disable_tqdm=True)
    evals = [h['eval_loss'] for h in s['trainer'].state.log_history if 'eval_loss' in h]
    assert len(evals) >= 2 and all(e == e for e in evals)

# --- one streaming pass, a cache keyed by content, the same rows in any number of processes (issue #14) ---
from qlora_nb.records import load_chats, scan_chats, MAX_PROBLEMS
from qlora_nb.tokenize import tokenize_chats, tokenized_chats

GOOD = {'messages': [{'role': 'user', 'content': 'こんにちは'}, {'role': 'assistant', 'content': 'どうも。'}]}
BAD = {'messages': [{'role': 'user', 'content': 'no reply'}]}

def _big(tmp_path, suffix, n=40_000, bad_at=(0, 20_000, 39_999)):
    recs = (BAD if i in bad_at else GOOD for i in range(n))
    p = tmp_path/f'big{suffix}'
    with open(p, 'w', encoding='utf-8') as f:
        if suffix == '.jsonl':
            for r in recs: f.write(json.dumps(r, ensure_ascii=False) + '\n')
        else:
            f.write('[\n'); f.write(',\n'.join(json.dumps(r, ensure_ascii=False) for r in recs)); f.write('\n]')
    return p

@pytest.mark.parametrize('suffix', ['.jsonl', '.json'])
def test_streaming_validation_large_file(tmp_path, suffix):
    "Errors at the start, middle and end of a large file are all named, in one pass that never holds the records."
    import tracemalloc
    p = _big(tmp_path, suffix)
    tracemalloc.start()
    n, count, first = scan_chats([p])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (n, count) == (40_000, 3)
    where = ['line 1:', 'line 20001:', 'line 40000:'] if suffix == '.jsonl' else ['record 0:', 'record 20000:', 'record 39999:']
    assert all(any(w in x and 'no assistant turn' in x for x in first) for w in where), first
    assert peak < p.stat().st_size / 2, (peak, p.stat().st_size)   # the file is never held, nor its records
    with pytest.raises(DataError, match=r'^3 problem\(s\)'): check_data(p)

def test_problems_capped_but_counted(tmp_path):
    p = _big(tmp_path, '.jsonl', n=5_000, bad_at=range(0, 5_000, 2))
    n, count, first = scan_chats([p])
    assert (n, count, len(first)) == (5_000, 2_500, MAX_PROBLEMS)
    with pytest.raises(DataError, match=f'… and {2_500 - MAX_PROBLEMS} more.'): check_data(p)

def test_json_and_jsonl_load_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv('QLORA_NB_CACHE', str(tmp_path/'cache'))
    a, b = _big(tmp_path, '.jsonl', n=3_000, bad_at=()), _big(tmp_path, '.json', n=3_000, bad_at=())
    assert load_chats(a)[:] == load_chats(b)[:] and len(load_chats(a)) == 3_000

@pytest.fixture(scope='module')
def tok():
    from transformers import AutoTokenizer
    from qlora_nb.tiny import tiny_model_dir
    return AutoTokenizer.from_pretrained(tiny_model_dir())

def test_num_proc_gives_the_same_rows(tmp_path, monkeypatch, tok):
    from qlora_nb.bench import make_chats, write_jsonl
    monkeypatch.setenv('QLORA_NB_CACHE', str(tmp_path/'cache'))
    ds = load_chats(write_jsonl(make_chats(1_200, tok), tmp_path/'c.jsonl'))
    outs = {}
    for k in (1, 3):
        (tmp_path/f'o{k}').mkdir()
        outs[k] = tokenize_chats(ds, tok, 128, num_proc=k, out_dir=tmp_path/f'o{k}')
    assert outs[1][1] == outs[3][1] and outs[1][1]['truncated'] > 0
    assert outs[1][0][:] == outs[3][0][:]
    assert outs[1][0][:] == tokenize_chats(ds, tok, 128)[0][:]   # in memory, as on disk

def test_cache_hit_and_miss(tmp_path, monkeypatch, tok):
    "A second call tokenizes nothing; new data bytes, tokenizer, template or max_length each tokenize anew."
    import copy
    from qlora_nb.config import load_config
    monkeypatch.setenv('QLORA_NB_CACHE', str(tmp_path/'cache'))
    p = tmp_path/'c.jsonl'
    p.write_text('\n'.join(json.dumps(GOOD, ensure_ascii=False) for _ in range(50)) + '\n', encoding='utf-8')
    data = load_config()['data']
    def said(t=tok, d=data):
        out = []
        rows, st = tokenized_chats(p, t, d, out.append)
        assert len(out) == 1
        return out[0], rows, st
    first, rows, st = said()
    assert first.startswith('Tokenized 50 conversations') and st['conversations'] == 50
    again, rows2, _ = said()
    assert 'nothing to tokenize' in again and rows2[:] == rows[:]
    assert 'nothing to tokenize' in said(copy.deepcopy(tok))[0]             # an equal tokenizer is the same key
    assert said(d={**data, 'max_length': 16})[0].startswith('Tokenized')
    other = copy.deepcopy(tok); other.chat_template = other.chat_template.replace('<|im_start|>', '<|im_start|> ')
    assert said(other)[0].startswith('Tokenized')
    grown = copy.deepcopy(tok); grown.add_tokens(['<|new|>'], special_tokens=True)
    assert said(grown)[0].startswith('Tokenized')
    with open(p, 'a', encoding='utf-8') as f: f.write(json.dumps(GOOD, ensure_ascii=False) + '\n')
    msg, rows3, st3 = said()
    assert msg.startswith('Tokenized 51') and len(rows3) == 51
    assert not list((tmp_path/'cache'/'tokenized').glob('*.tmp-*'))      # no half entries left behind

@pytest.mark.parametrize('truncation', ['drop', 'right'])
def test_no_row_left_refused(tmp_path, capsys, truncation):
    "Data of which every conversation is dropped (too long with truncation=drop, or no reply within max_length): one sentence naming the file and the counts, exit 2, nothing written — not the Trainer's IndexError."
    from conftest import refused_in_process
    p = tmp_path/'long.jsonl'
    p.write_text(''.join(json.dumps({'messages': [{'role': 'user', 'content': f'長い質問 {i} です。' * 40}, {'role': 'assistant', 'content': 'はい。'}]},
                                    ensure_ascii=False) + '\n' for i in range(3)), encoding='utf-8')
    err = refused_in_process(capsys, 'train', '--set', f'training_data_json_path={p}', '--set', 'data.max_length=32', '--set', f'data.truncation={truncation}',
                             '--set', f'result_path={tmp_path}/run', '--set', f'save_path={tmp_path}/adapter',
                             unwritten=[tmp_path/'run', tmp_path/'adapter'], needles=[f'{p}: no conversation is left to train on (of 3: '])
    assert ('3 longer than data.max_length=32' in err) == (truncation == 'drop') and ('3 with no reply token' in err) == (truncation == 'right'), err

def test_no_eval_row_left_refused(tmp_path, capsys):
    "The same for an eval file whose every conversation is dropped: the sentence names it and says 'evaluate on'."
    from conftest import refused_in_process
    p = tmp_path/'eval.jsonl'
    p.write_text(json.dumps({'messages': [{'role': 'user', 'content': '評価用の長い質問です。' * 40}, {'role': 'assistant', 'content': 'はい。'}]},
                            ensure_ascii=False) + '\n', encoding='utf-8')
    refused_in_process(capsys, 'inspect', '--set', f'data.eval_path={p}', '--set', 'data.max_length=48',
                       needles=[f'{p}: no conversation is left to evaluate on (of 1: 0 longer than data.max_length=48'])
