"The bench machinery end to end on the `test` size: every run in its own process, the JSON the CLI writes."
import argparse, json
import pytest
from qlora_nb.bench import add_bench_parser
from conftest import run

@pytest.mark.slow
def test_bench_cli_json(tmp_path, capsys):
    p = argparse.ArgumentParser(); add_bench_parser(p.add_subparsers(dest='cmd'))
    out = tmp_path/'bench.json'
    a = p.parse_args(['bench', '--size', 'test', '-n', '6', '--targets', 'all', '--json', str(out)])
    a.fn(a)
    r = json.loads(out.read_text(encoding='utf-8'))
    assert {'speedup_vs_seed', 'speedup_vs_trl', 'padding_limit', 'memory', 'runs'} <= set(r)
    by = {x['path']: x for x in r['runs']}
    assert set(by) == {'seed', 'default', 'trl'}
    assert all(x['conversations'] == 6 and x['targets'] == 'all' for x in r['runs'])
    seed = by['seed']
    assert seed['tokens'] == 6 * 1024 and seed['batches'] == 6 and seed['pad_fraction'] > 0.5
    # every path computes the same conversations; the chat-template paths train only on assistant tokens
    assert by['default']['trained_tokens'] == by['trl']['trained_tokens'] < by['default']['real_tokens']
    # the default's token-budget batches pad less than TRL's random batches of 8, and far less than the seed
    assert by['default']['tokens'] <= by['trl']['tokens'] and by['default']['tokens'] < seed['tokens']
    # the ratios themselves are checked on hand-made runs under `summarize` (90_benchmark); here, that they agree with the
    # padding each run measured on its own (`pad_fraction`, counted batch by batch)
    assert r['padding_limit'] == pytest.approx(1 / (1 - seed['pad_fraction'])) and r['padding_limit'] > 2
    assert abs(r['memory']['ratio'] / r['memory']['theory_ratio'] - 1) < 0.05
    assert 'speed-up vs seed' in capsys.readouterr().out

def test_import_bounds_onednn_caches_unless_user_set():
    "Importing qlora_nb caps oneDNN's per-shape caches (resident memory grows without it) but keeps a user's own values."
    code = "import os, qlora_nb; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'], os.environ['LRU_CACHE_CAPACITY'])"
    caps = lambda one, lru: run(code=code, env={'ONEDNN_PRIMITIVE_CACHE_CAPACITY': one, 'LRU_CACHE_CAPACITY': lru}, rc=0).stdout.split()
    assert caps(None, None) == ['32', '1']                       # neither set
    assert caps('1024', '512') == ['1024', '512']

@pytest.mark.slow
def test_bench_vocab_part(tmp_path, capsys):
    "`qlora-nb bench --part vocab` end to end on the `test` size with a wider vocabulary: plain, chunked and TRL, the path each took."
    p = argparse.ArgumentParser(); add_bench_parser(p.add_subparsers(dest='cmd'))
    out = tmp_path/'vocab.json'
    a = p.parse_args(['bench', '--part', 'vocab', '--size', 'test', '--vocab', '4096', '-n', '6', '--budgets', '512', '--json', str(out)])
    a.fn(a)
    r = json.loads(out.read_text(encoding='utf-8'))
    by = {x['part']: x for x in r['runs']}
    assert {k: v['loss_path'] for k, v in by.items()} == {'plain': 'plain', 'chunked': 'chunked', 'trl': 'trl'}
    assert by['plain']['trained_tokens'] == by['chunked']['trained_tokens'] == by['trl']['trained_tokens']
    assert r['setup']['vocab'] == 4096 and {'rss_vs_trl_512', 'rss_vs_plain_512', 'time_vs_plain_512'} <= set(r)
    assert 'chunked at 512 tokens a batch' in capsys.readouterr().out

@pytest.mark.slow
def test_bench_part_data(tmp_path, capsys):
    "`qlora-nb bench --part data`: `qlora-nb train` to its first step, cold and cached, and TRL, on the same conversations, each a fresh process."
    p = argparse.ArgumentParser(); add_bench_parser(p.add_subparsers(dest='cmd'))
    out = tmp_path/'data.json'
    a = p.parse_args(['bench', '--part', 'data', '--sizes', '2500', '--json', str(out)])
    a.fn(a)
    r = json.loads(out.read_text(encoding='utf-8'))
    by = {x['kind']: x for x in r['runs']}
    assert set(by) == {'ours', 'cached', 'trl'} and all(x['conversations'] == 2500 for x in r['runs'])
    assert by['ours']['rows'] == by['cached']['rows'] == by['trl']['rows'] == 2500   # nothing dropped: every conversation fits
    assert by['ours']['said'][0].startswith('Tokenized 2,500') and 'nothing to tokenize' in by['cached']['said'][0]
    assert by['ours']['steps'] == by['cached']['steps'] == 1                            # timed through the first optimizer step
    assert all(x['peak_pss_mb'] > 100 for x in r['runs'])
    assert {'speedup_vs_trl_2500', 'pss_vs_trl_2500', 'cached_speedup_2500'} <= set(r['summary'])
    assert 'TRL SFTTrainer' in capsys.readouterr().out

@pytest.mark.slow
def test_bench_part_mixed_sizes(tmp_path):
    "`qlora-nb bench --part mixed --sizes A,B --kinds ours,cached`: each size written as three sources, prepared cold then cached, and the peak's growth from the smaller size to the larger."
    p = argparse.ArgumentParser(); add_bench_parser(p.add_subparsers(dest='cmd'))
    out = tmp_path/'mixed.json'
    a = p.parse_args(['bench', '--part', 'mixed', '--sizes', '300,900', '--kinds', 'ours,cached', '--json', str(out)])
    a.fn(a)
    r = json.loads(out.read_text(encoding='utf-8'))
    assert [(x['kind'], x['conversations']) for x in r['runs']] == [('ours', 300), ('cached', 300), ('ours', 900), ('cached', 900)]
    by = {(x['kind'], x['conversations']): x for x in r['runs']}
    for n in (300, 900):
        assert by['ours', n]['rows'] == by['cached', n]['rows'] and n / 2 < by['ours', n]['rows'] < n   # Alpaca's third at weight 0.5
        assert by['ours', n]['steps'] == by['cached', n]['steps'] == 1
    said = by['ours', 900]['said']
    assert any(l.startswith('Data sources:') and 'sharegpt.jsonl.gz' in l and 'alpaca.parquet' in l and 'messages.jsonl' in l for l in said)
    assert {'rss_growth', 'pss_growth', 'cached_speedup_300', 'cached_speedup_900'} <= set(r['summary'])
    assert r['summary']['rss_growth'] == by['ours', 900]['peak_rss_mb'] / by['ours', 300]['peak_rss_mb']
