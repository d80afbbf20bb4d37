"Property-based tests: malformed chat records and files are reported as sentences naming file, record and field, never as tracebacks."
import json, os, subprocess, sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from qlora_nb.data import DataError, check_data, record_problems, ROLES

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
            and any(m['role'] == 'assistant' for m in ms))

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
        for i in bad[:5]:  # each bad record is named, by line (JSONL) or record index (JSON array)
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

def _cli(args, cwd):
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1]), 'HF_HUB_OFFLINE': '1'}
    return subprocess.run([sys.executable, '-m', 'qlora_nb.cli', *args], cwd=cwd, env=env, capture_output=True, text=True, encoding='utf-8')

def test_cli_bad_data_exit_2_nothing_written(tmp_path):
    (tmp_path/'bad.jsonl').write_text('{"messages": [{"role": "user", "content": "こんにちは"}]}\n{"messages": [}\n', encoding='utf-8')
    sets = ['--set', 'training_data_json_path=bad.jsonl', '--set', 'result_path=out/run', '--set', 'save_path=out/adapter']
    for cmd in ('inspect', 'train'):
        r = _cli([cmd, *sets], tmp_path)
        assert r.returncode == 2, r.stderr
        assert 'bad.jsonl, line 1: no assistant turn' in r.stderr and 'bad.jsonl, line 2: invalid JSON' in r.stderr
        assert 'Traceback' not in r.stderr
    assert not (tmp_path/'out').exists()

def test_cli_inspect_reports(tmp_path):
    r = _cli(['inspect', '--set', 'data.eval_fraction=0.1'], tmp_path)
    assert r.returncode == 0, r.stderr
    assert '270 rows to train on, 30 conversations to evaluate on' in r.stdout and '[[' in r.stdout and 'Trained on:' in r.stdout

def test_train_logs_eval_loss(tmp_path):
    from qlora_nb.config import load_config
    from qlora_nb.train import train
    cfg = load_config(overrides=[f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter', 'data.eval_fraction=0.1',
                                 'training.max_steps=4', 'training.logging_steps=2', 'training.per_device_train_batch_size=4',
                                 'training.gradient_accumulation_steps=1', 'training.save_steps=100', 'data.max_length=128'])
    s = train(cfg, disable_tqdm=True)
    evals = [h['eval_loss'] for h in s['trainer'].state.log_history if 'eval_loss' in h]
    assert len(evals) >= 2 and all(e == e for e in evals)
