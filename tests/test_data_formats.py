"Every kind of data file × every record format read as the same canonical chats; mixing, deduplication, refusals, flat memory (issue #20)."
import gzip, json
from pathlib import Path

import pyarrow as pa, pyarrow.parquet as pq
import pytest

from qlora_nb.config import ConfigError, load_config
from qlora_nb.formats import DataError, canonical_records, from_sharegpt, record_format, read_records, to_canonical
from qlora_nb.records import chat_from_row, check_data, data_source, load_chats, scan_chats, source_counts, train_source

def messages(ds)->list:
    "The messages of each checked chat, as the canonical record has them (`chat_from_row`)."
    return [chat_from_row(r)['messages'] for r in ds]
from conftest import refused, run

# The same three conversations in each format (one with a system prompt, one with an earlier exchange).
CHATS = [[{'role': 'user', 'content': '日本の首都は？'}, {'role': 'assistant', 'content': '東京です。'}],
         [{'role': 'system', 'content': '丁寧に答えてください。'}, {'role': 'user', 'content': '次の文を英語に訳してください。\n\n猫が好きです。'},
          {'role': 'assistant', 'content': 'I like cats.'}],
         [{'role': 'user', 'content': '1+1は？'}, {'role': 'assistant', 'content': '2です。'},
          {'role': 'user', 'content': 'では2+2は？'}, {'role': 'assistant', 'content': '4です。'}]]
AS = {
    'messages': [{'messages': c} for c in CHATS],
    'sharegpt': [{'conversations': [{'from': 'human', 'value': '日本の首都は？'}, {'from': 'gpt', 'value': '東京です。'}]},
                 {'system': '丁寧に答えてください。', 'conversations': [{'from': 'human', 'value': '次の文を英語に訳してください。\n\n猫が好きです。'},
                                                                  {'from': 'gpt', 'value': 'I like cats.'}]},
                 {'conversations': [{'from': 'human', 'value': '1+1は？'}, {'from': 'gpt', 'value': '2です。'},
                                    {'from': 'human', 'value': 'では2+2は？'}, {'from': 'gpt', 'value': '4です。'}]}],
    'alpaca': [{'instruction': '日本の首都は？', 'input': '', 'output': '東京です。'},
               {'instruction': '次の文を英語に訳してください。', 'input': '猫が好きです。', 'output': 'I like cats.', 'system': '丁寧に答えてください。'},
               {'instruction': 'では2+2は？', 'output': '4です。', 'history': [['1+1は？', '2です。']]}],
}
KINDS = ['.json', '.jsonl', '.json.gz', '.jsonl.gz', '.parquet', 'saved']

def write(recs:list, path:Path)->Path:
    "Write `recs` as the kind of data file `path` names (a folder for 'saved': `datasets.save_to_disk`)."
    n = path.name
    if n.endswith('saved'):
        import datasets
        datasets.Dataset(pa.Table.from_struct_array(pa.array(recs))).save_to_disk(str(path))   # every record's keys (from_list takes the first's)
    elif n.endswith('.parquet'): pq.write_table(pa.Table.from_struct_array(pa.array(recs)), path)   # every record's keys, not the first's
    else:
        text = (json.dumps(recs, ensure_ascii=False) if '.json' in n and '.jsonl' not in n
                else ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in recs))
        if n.endswith('.gz'):
            with gzip.open(path, 'wt', encoding='utf-8') as f: f.write(text)
        else: path.write_text(text, encoding='utf-8')
    return path

@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('fmt', list(AS))
def test_every_kind_and_format_reads_the_same_chats(tmp_path, kind, fmt):
    p = write(AS[fmt], tmp_path/(f'd{kind}' if kind != 'saved' else 'saved'))
    assert messages(load_chats(p)) == CHATS

def test_detection_per_record():
    assert [record_format(r) for r in (*AS['messages'][:1], *AS['sharegpt'][:1], *AS['alpaca'][:1], {'text': 'x'}, [1])] == \
           ['messages', 'sharegpt', 'alpaca', None, None]

WEATHER = {'conversations': [
    {'from': 'system', 'value': '天気を調べるアシスタントです。'},
    {'from': 'human', 'value': '大阪と東京の天気は？'},
    {'from': 'function_call', 'value': json.dumps([{'name': 'get_weather', 'arguments': {'city': '大阪'}},
                                                    {'name': 'get_weather', 'arguments': '{"city": "東京"}'}], ensure_ascii=False)},
    {'from': 'observation', 'value': '{"weather": "雨"}'},
    {'from': 'tool', 'value': '{"weather": "晴れ"}'},
    {'from': 'gpt', 'value': '大阪は雨、東京は晴れです。'}],
    'tools': json.dumps([{'name': 'get_weather', 'description': '今の天気', 'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}}}}],
                        ensure_ascii=False)}

@pytest.mark.parametrize('kind', ['.jsonl', '.parquet'])
def test_sharegpt_tool_turns_become_canonical_tool_calls(tmp_path, kind):
    [(where, rec, probs)] = list(canonical_records(write([WEATHER], tmp_path/f'w{kind}')))
    assert probs == [] and where.endswith(('line 1', 'row 0'))
    call = lambda city: {'type': 'function', 'function': {'name': 'get_weather', 'arguments': {'city': city}}}
    assert rec['messages'][2] == {'role': 'assistant', 'content': None, 'tool_calls': [call('大阪'), call('東京')]}
    assert rec['messages'][3:5] == [{'role': 'tool', 'content': '{"weather": "雨"}', 'name': 'get_weather'},
                                    {'role': 'tool', 'content': '{"weather": "晴れ"}', 'name': 'get_weather'}]
    assert rec['tools'] == [{'type': 'function', 'function': json.loads(WEATHER['tools'])[0]}]

def test_messages_from_arrow_lose_arrow_nulls(tmp_path):
    "Parquet gives every message every field of the column's struct; the nulls are not the user's keys."
    recs = [{'messages': [{'role': 'user', 'content': 'やあ'}, {'role': 'assistant', 'content': 'どうも', 'thinking': '挨拶'}]},
            {'messages': [{'role': 'user', 'content': 'a'}, {'role': 'assistant', 'content': 'b'}]}]
    got = [r for _, r, _ in canonical_records(write(recs, tmp_path/'m.parquet'))]
    assert got[1] == recs[1] and got[0]['messages'][1] == {'role': 'assistant', 'content': 'どうも', 'reasoning_content': '挨拶'}

def test_bad_records_each_named(tmp_path):
    bad = [*AS['sharegpt'][:1], {'conversations': [{'from': 'bot', 'value': 'x'}, {'from': 'gpt', 'value': 'y'}]},
           {'conversations': [{'from': 'human', 'value': 'q'}, {'from': 'function_call', 'value': 'not json'}]}, AS['alpaca'][0], {'id': 5}]
    for kind, at in (('.jsonl', lambda i: f'line {i+1}:'), ('.json', lambda i: f'record {i}:'), ('.parquet', lambda i: f'row {i}:')):
        if kind == '.parquet': continue   # Arrow cannot hold these mixed shapes in one column; an Alpaca parquet is below
        p = write(bad, tmp_path/f'bad{kind}')
        with pytest.raises(DataError) as e: check_data(p)
        msg = str(e.value)
        assert msg.startswith('4 problem(s)'), msg
        assert f"{at(1)} conversations[0].from is 'bot'" in msg
        assert f"{at(2)} conversations[1].value is not JSON" in msg
        assert f"{at(3)} an Alpaca ('instruction') record in a file of ShareGPT ('conversations') records" in msg
        assert f"{at(4)} no ShareGPT ('conversations') field (found: 'id')" in msg
    p = write([AS['alpaca'][0], {'instruction': '出力なし', 'input': 'x'}], tmp_path/'a.parquet')
    with pytest.raises(DataError, match=r"a\.parquet, row 1: no 'output' field; an Alpaca record needs 'instruction' and 'output'\."):
        check_data(p)

def test_cli_refuses_bad_records_in_one_report(tmp_path):
    write([AS['alpaca'][0], {'instruction': '出力なし'}], tmp_path/'a.jsonl.gz')
    write([AS['sharegpt'][0], {'conversations': [{'from': 'robot', 'value': 'x'}]}], tmp_path/'s.json')
    p = run('inspect', '--set', 'data.sources=[{path: a.jsonl.gz}, {path: s.json, weight: 2}]', '--set', 'result_path=out/run',
            '--set', 'save_path=out/adapter', cwd=tmp_path)
    refused(p, '2 problem(s)', "a.jsonl.gz, line 2: no 'output' field", "s.json, record 1: conversations[0].from is 'robot'",
            unwritten=[tmp_path/'out'])

def test_cli_inspect_shows_each_sources_counts(tmp_path):
    write(AS['alpaca'] + AS['alpaca'][:1], tmp_path/'ja.parquet')           # one duplicate within the source
    write(AS['messages'], tmp_path/'m.jsonl')                               # all three duplicates of the Alpaca ones
    new = {'conversations': [{'from': 'human', 'value': '新しい質問'}, {'from': 'gpt', 'value': '新しい答え'}]}
    write(AS['sharegpt'][:1] + [new], tmp_path/'s.jsonl')                   # the first a duplicate of an Alpaca one
    p = run('inspect', '--set', 'data.sources=[{path: ja.parquet, weight: 2}, {path: m.jsonl}, {path: s.jsonl, weight: 3}]', cwd=tmp_path, rc=0)
    assert ('Data sources: ja.parquet: 4 read, 0 invalid, 1 duplicates dropped, 6 kept; m.jsonl: 3 read, 0 invalid, 3 duplicates dropped, 0 kept; '
            's.jsonl: 2 read, 0 invalid, 1 duplicates dropped, 3 kept.') in p.stdout, p.stdout
    assert p.stdout.count('Data sources: ') == 1, p.stdout   # once, in the report (not also as the data's log line)
    assert 'data.sources: 9 conversations valid; 9 rows to train on' in p.stdout, p.stdout

def test_weights_deterministic_and_counted(tmp_path):
    a = write([{'messages': [{'role': 'user', 'content': f'質問{i}'}, {'role': 'assistant', 'content': '答え'}]} for i in range(2_000)], tmp_path/'a.jsonl')
    b = write([{'instruction': f'指示{i}', 'output': '出力'} for i in range(300)], tmp_path/'b.parquet')
    spec = [{'path': str(a), 'weight': 0.25}, {'path': str(b), 'weight': 2.5}]
    one, two, other = [data_source(spec, dedup=True, seed=s) for s in (7, 7, 8)]
    rows = messages(load_chats(one))
    assert rows == messages(load_chats(two)) and one.fingerprint == two.fingerprint != other.fingerprint
    c = source_counts(one)
    assert [(x['read'], x['invalid'], x['duplicates']) for x in c] == [(2_000, 0, 0), (300, 0, 0)]
    assert 400 <= c[0]['kept'] <= 600 and 700 <= c[1]['kept'] <= 800 and len(rows) == c[0]['kept'] + c[1]['kept']
    assert messages(load_chats(other)) != rows                            # another seed, other samples
    assert data_source([{'path': str(a), 'weight': 2}], seed=1).fingerprint == data_source([{'path': str(a), 'weight': 2}], seed=2).fingerprint

def test_dedup_per_source_and_off(tmp_path):
    a = write(AS['messages'] * 2, tmp_path/'a.jsonl')
    b = write(AS['sharegpt'], tmp_path/'b.json')                           # the same conversations, another format
    cfg = lambda *o: load_config(overrides=[f'data.sources=[{{path: {a}}}, {{path: {b}}}]', *o])
    on, off = train_source(cfg()), train_source(cfg('data.dedup=false'))
    assert len(load_chats(on)) == 3 and [x['duplicates'] for x in source_counts(on)] == [3, 3]
    assert len(load_chats(off)) == 9 and [x['duplicates'] for x in source_counts(off)] == [0, 0]
    assert on.fingerprint != off.fingerprint

def test_list_of_paths_and_config_refusals(tmp_path):
    a, b = write(AS['alpaca'], tmp_path/'a.json.gz'), write(AS['sharegpt'][:1], tmp_path/'b.jsonl')
    src = train_source(load_config(overrides=[f'training_data_json_path=[{a}, {b}]', 'data.dedup=false']))
    assert len(load_chats(src)) == 4 and [x['kept'] for x in source_counts(src)] == [3, 1]
    with pytest.raises(ConfigError, match=r"'data.sources' entry 1 \(b.jsonl\) has weight -1; give a number above 0"):
        load_config(overrides=['data.sources=[{path: a.jsonl}, {path: b.jsonl, weight: -1}]'])
    with pytest.raises(DataError, match=r'gone.jsonl: no such data file; check data.sources\.$'):
        train_source(load_config(overrides=[f'data.sources=[{{path: {a}}}, {{path: {tmp_path}/gone.jsonl}}]']))
    (tmp_path/'notes.txt').write_text('x')
    with pytest.raises(DataError, match='not a kind of data file qlora_nb reads'): data_source(tmp_path/'notes.txt')

def test_hub_id_offline_is_one_sentence(tmp_path):
    with pytest.raises(DataError) as e: data_source('someone/no-such-chats', key='data.sources')
    msg = str(e.value)
    assert msg.startswith("someone/no-such-chats: no such data file or folder, and the hub dataset 'someone/no-such-chats' could not be loaded")
    assert 'check data.sources' in msg and '\n' not in msg

def test_saved_dataset_dict_folder(tmp_path):
    import datasets
    ds = datasets.Dataset(pa.Table.from_struct_array(pa.array(AS['alpaca'])))
    datasets.DatasetDict(train=ds, test=ds.select([0])).save_to_disk(str(tmp_path/'dd'))
    assert messages(load_chats(tmp_path/'dd')) == CHATS
    datasets.DatasetDict(test=ds).save_to_disk(str(tmp_path/'nt'))
    with pytest.raises(DataError, match="a DatasetDict without a 'train' split"): load_chats(tmp_path/'nt')

MEMORY = """
import gzip, json, resource, sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from qlora_nb.records import scan_chats
d, kind = Path(sys.argv[1]), sys.argv[2]
rec = {'conversations': [{'from': 'human', 'value': '1+1は？' * 20}, {'from': 'gpt', 'value': '2です。' * 20}]}
def make(n, p):
    if kind == '.parquet':
        with pq.ParquetWriter(p, pa.Table.from_pylist([rec]).schema) as w:
            for _ in range(n // 5_000): w.write_table(pa.Table.from_pylist([rec] * 5_000))
    else:
        with gzip.open(p, 'wt', encoding='utf-8') as f:
            for _ in range(n): f.write(json.dumps(rec, ensure_ascii=False) + '\\n')
    return p
small, big = make(5_000, d/f'small{kind}'), make(100_000, d/f'big{kind}')
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
assert scan_chats([small], dedup=True)[:2] == (5_000, 0)
before = rss()
assert scan_chats([big], dedup=True)[:2] == (100_000, 0)
print(rss() - before)
"""

@pytest.mark.parametrize('kind', ['.jsonl.gz', '.parquet'])
def test_memory_flat_on_a_large_source(tmp_path, kind):
    "100k records of a gzipped JSONL or Parquet file are read a record (or a batch) at a time: peak memory grows by no more than a few MB over 5k records."
    grew = int(run(tmp_path, kind, code=MEMORY, rc=0).stdout.split()[-1])
    assert grew < 16 * 2**20, f"peak RSS grew by {grew / 2**20:.0f} MiB reading 100k records"   # held as Python objects they would take > 300 MiB

def test_training_log_says_each_sources_counts(tmp_path):
    "`build_datasets` (what `train` calls, with `print` as its log) says what each source gave, on a cold and on a cached read."
    from transformers import AutoTokenizer
    from qlora_nb.tiny import tiny_model_dir
    from qlora_nb.tokenize import build_datasets
    a, b = write(AS['alpaca'], tmp_path/'a.parquet'), write(AS['sharegpt'], tmp_path/'b.jsonl')
    cfg = load_config(overrides=[f'data.sources=[{{path: {a}, weight: 2}}, {{path: {b}}}]'])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    for _ in range(2):
        said = []
        sets = build_datasets(cfg, tok, log=said.append)
        assert len(sets.train) == 6 and [x['duplicates'] for x in sets.stats['sources']] == [0, 3]
        assert said[-1] == f"Data sources: {a}: 3 read, 0 invalid, 0 duplicates dropped, 6 kept; {b}: 3 read, 0 invalid, 3 duplicates dropped, 0 kept."

from hypothesis import given, settings, strategies as st
_text = st.text(alphabet=st.characters(blacklist_categories=('Cs',)), max_size=12)
_json = st.recursive(st.none() | st.booleans() | st.integers() | _text,
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3), max_leaves=6)
_turn = st.one_of(_json, st.fixed_dictionaries({'from': st.one_of(st.sampled_from(['human', 'gpt', 'system', 'function_call', 'observation', 'tool', 'bot']), _json),
                                                'value': st.one_of(_text, _json, st.just('{"name": "f", "arguments": {"a": 1}}'))}))
_record = st.one_of(st.fixed_dictionaries({'conversations': st.one_of(st.lists(_turn, max_size=5), _json)}, optional={'tools': _json, 'system': _json}),
                    st.fixed_dictionaries({'instruction': _json}, optional={'input': _json, 'output': _json, 'system': _json, 'history': _json}))

@given(_record)
@settings(max_examples=300, deadline=None)
def test_conversion_never_raises(rec):
    "Whatever a ShareGPT or Alpaca record holds, converting it gives a record or problems in words, never an exception."
    out, probs = to_canonical(rec, record_format(rec))
    assert isinstance(probs, list) and all(isinstance(p, str) and p for p in probs)
    if not probs: assert isinstance(out.get('messages'), list)
