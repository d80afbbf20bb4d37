"`qlora-nb eval`: the report's figures against a direct computation, the stop rate, tasks files and the judge, refusals."
import json, math, time
from pathlib import Path
import pytest
from conftest import first_chats, refused, run, train_adapter

SETS = ['training.max_steps=6', 'training.save_steps=100', 'training.logging_steps=1', 'data.max_length=96',
        'training.learning_rate=2e-3', 'training.disable_tqdm=true']

@pytest.fixture(scope='module')
def adapter(tmp_path_factory):
    return train_adapter(tmp_path_factory.mktemp('eval'), SETS)

@pytest.fixture(scope='module')
def chats(tmp_path_factory): return first_chats(tmp_path_factory.mktemp('data')/'chats.jsonl', 5)

def test_report_against_a_direct_computation(adapter, chats, tmp_path):
    t0 = time.time()
    out = tmp_path/'report'
    p = run('eval', '--adapter', adapter, '--data', chats, '--output', out, '--max-new-tokens', 8, rc=0)
    assert 'stop rate' in p.stdout and 'eval.html' in p.stdout, p.stdout
    r = json.loads((out/'eval.json').read_text(encoding='utf-8'))
    assert sorted(x.name for x in out.iterdir()) == ['eval.html', 'eval.json', 'eval.md']
    assert r['items'] == 5 and r['data'] == 'chats.jsonl' and str(tmp_path) not in (out/'eval.json').read_text(encoding='utf-8')

    # the loss of one chat by hand: the model's own loss (transformers' shifted mean cross-entropy) on the replies
    import torch
    from qlora_nb.infer import load_for_inference
    from qlora_nb.template import tokenize_conversation
    from qlora_nb.tiny import read_sample_chats
    model, tok = load_for_inference(adapter)
    msgs = read_sample_chats()[0]['messages']
    last = max(i for i, m in enumerate(msgs) if m['role'] == 'assistant')
    t = tokenize_conversation(msgs[:last+1], tok, 96)
    with torch.no_grad():
        ours = model(input_ids=torch.tensor([t['input_ids']]), labels=torch.tensor([t['labels']])).loss.item()
        with model.disable_adapter():
            base = model(input_ids=torch.tensor([t['input_ids']]), labels=torch.tensor([t['labels']])).loss.item()
    assert math.isclose(r['rows'][0]['adapter']['loss'], ours, rel_tol=1e-4), (r['rows'][0]['adapter']['loss'], ours)
    assert math.isclose(r['rows'][0]['base']['loss'], base, rel_tol=1e-4)
    assert r['metrics']['base']['loss'] > r['metrics']['adapter']['loss']                    # it trained
    for side in ('base', 'adapter'):
        rows, m = [x[side] for x in r['rows']], r['metrics'][side]
        assert math.isclose(m['perplexity'], math.exp(m['loss']), rel_tol=1e-9)
        # stop rate: the share of answers that ended at a stop token; the others ran to --max-new-tokens
        assert m['stop_rate'] == sum(x['stopped'] for x in rows) / len(rows)
        assert all(x['tokens'] == 8 for x in rows if not x['stopped']) and all(x['tokens'] <= 8 for x in rows)
        assert m['mean_tokens'] == sum(x['tokens'] for x in rows) / len(rows)
    page = (out/'eval.html').read_text(encoding='utf-8')
    assert '<svg' in page and '<script' not in page and r['rows'][0]['prompt'][:10] in page
    assert '| stop rate |' in (out/'eval.md').read_text(encoding='utf-8')
    print(f"\neval of 5 chats (base + adapter, 8 new tokens): {time.time()-t0:.0f} s")

def test_tasks_file_and_judge(adapter, tmp_path):
    tasks = tmp_path/'tasks.jsonl'
    recs = [{'input': '日本で一番高い山は？', 'output': '富士山です。', 'eval_aspect': '富士山と答えていること'},
            {'input': 'What is 2+2?', 'output': '4', 'eval_aspect': 'the number 4'}]
    tasks.write_text(''.join(json.dumps(x, ensure_ascii=False) + '\n' for x in recs), encoding='utf-8')
    run('eval', '--adapter', adapter, '--data', tasks, '--max-new-tokens', 6, '--judge', 'builtin:tiny', rc=0)
    r = json.loads((adapter/'eval.json').read_text(encoding='utf-8'))        # into the adapter folder by default
    from qlora_nb.eval import parse_score
    assert r['judge'] == 'builtin:tiny' and '採点基準' in r['rubric']
    assert [x['reference'] for x in r['rows']] == ['富士山です。', '4'] and r['rows'][0]['eval_aspect'] == '富士山と答えていること'
    for side in ('base', 'adapter'):
        rows = [x[side] for x in r['rows']]
        # the tiny judge writes noise: each score is what its reply holds, an unparsable reply counted as unscored
        assert all(x['score'] == parse_score(x['judge_reply']) for x in rows)
        assert r['metrics'][side]['unscored'] == sum(x['score'] is None for x in rows)
    md = (adapter/'eval.md').read_text(encoding='utf-8')
    assert '富士山です。' in md and '基本的な採点基準' in md

def test_refusals(tmp_path, adapter):
    refused(run('eval', '--adapter', tmp_path/'nothing', rc=2), 'nothing', unwritten=[tmp_path/'nothing'])
    bad = tmp_path/'bad.jsonl'; bad.write_text('{"input": "x", "output": 3}\n', encoding='utf-8')
    refused(run('eval', '--adapter', adapter, '--data', bad, '--output', tmp_path/'o', rc=2), 'bad.jsonl', "'output'",
            unwritten=[tmp_path/'o'])

def test_model_card(adapter, chats, tmp_path):
    "The card `save_adapter` wrote parses back as YAML + Markdown, holds nothing of this machine, and `eval` fills its evaluation section."
    import getpass, socket, yaml
    text = (adapter/'README.md').read_text(encoding='utf-8')
    assert text.startswith('---\n')
    _, header, body = text.split('---\n', 2)
    h = yaml.safe_load(header)
    assert h['base_model'] == 'builtin:tiny' and h['library_name'] == 'peft' and h['pipeline_tag'] == 'text-generation'
    assert set(h['language']) == {'ja', 'en'} and 'qlora' in h['tags']
    import qlora_nb
    for leak in (str(adapter.parent), str(Path.home()), '/tmp/', socket.gethostname(), str(Path(qlora_nb.__file__).parent)):   # the package's own folder too
        assert leak not in text, leak
    from markdown_it import MarkdownIt
    toks = MarkdownIt().enable('table').parse(body)
    heads = [toks[i+1].content for i, t in enumerate(toks) if t.type == 'heading_open']
    assert heads[:1] == ['adapter'] and {'Training', 'Evaluation', 'Use'} <= set(heads), heads
    assert any(t.type == 'table_open' for t in toks) and 'PeftModel.from_pretrained(base, "adapter")' in body
    assert (adapter/'loss.png').read_bytes()[:4] == b'\x89PNG' and '](loss.png)' in body
    run('eval', '--adapter', adapter, '--data', chats, '--output', tmp_path/'r', '--max-new-tokens', 4, rc=0)
    card = (adapter/'README.md').read_text(encoding='utf-8')
    assert '| stop rate |' in card and 'Not evaluated yet' not in card and yaml.safe_load(card.split('---\n')[1]) == h
