"""Tool calls and reasoning (#20 items 1-2): the canonical record checked and kept, the template's capabilities found once,
what is trained token by token on every family replica whose real template takes tools, the refusals of the others,
reasoning on Qwen3 and DeepSeek-R1-distill (trl's training template), `reasoning_turns: each`, `chat_template_kwargs`."""
import copy, json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import refused, run, sets
from qlora_nb.config import load_config
from qlora_nb.families import FAMILIES, family_tokenizer, replica_dir, vocab_missing
from qlora_nb.records import DataError, canonical_chat, chat_from_row, chats_needs, check_data, load_chats
from qlora_nb.template import TemplateFacts, check_template_needs, reasoning_note, template_facts, tokenize_conversation
from qlora_nb.tiny import tiny_model_dir
from qlora_nb.tokenize import _chat_rows, marked, tokenized_chats, tokenized_key, STATS

WEATHER = {'type': 'function', 'function': {'name': 'get_weather', 'description': '都市の天気を返す',
           'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}}
TOOL_CHAT = [{'role': 'system', 'content': 'あなたは天気を答えるアシスタントです。'},
             {'role': 'user', 'content': '東京の天気は？'},
             {'role': 'assistant', 'content': None, 'tool_calls': [{'type': 'function', 'id': 'call00001',
                                                                     'function': {'name': 'get_weather', 'arguments': {'city': '東京'}}}]},
             {'role': 'tool', 'content': '晴れ、21度', 'tool_call_id': 'call00001', 'name': 'get_weather'},
             {'role': 'assistant', 'content': '東京は晴れです。'}]
THINK_CHAT = [{'role': 'user', 'content': '7 + 5 は？'},
              {'role': 'assistant', 'reasoning_content': '7 に 3 を足すと 10、残りの 2 で 12。', 'content': '12 です。'},
              {'role': 'user', 'content': 'では 12 + 9 は？'},
              {'role': 'assistant', 'reasoning_content': '12 に 8 を足すと 20、残りの 1 で 21。', 'content': '21 です。'}]
CALC = {'type': 'function', 'function': {'name': 'calculate', 'description': '計算する',
        'parameters': {'type': 'object', 'properties': {'expression': {'type': 'string'}}}}}
AGENT_CHAT = [{'role': 'user', 'content': '23 × 4 は？'},
              {'role': 'assistant', 'reasoning_content': '計算ツールを使う。', 'content': '',
               'tool_calls': [{'type': 'function', 'function': {'name': 'calculate', 'arguments': {'expression': '23*4'}}}]},
              {'role': 'tool', 'content': '92'},
              {'role': 'assistant', 'reasoning_content': '結果は 92。', 'content': '92 です。'},
              {'role': 'user', 'content': 'ありがとう'},
              {'role': 'assistant', 'reasoning_content': 'お礼への返事。', 'content': 'どういたしまして。'}]

TOOL_FAMILIES = ('llama', 'qwen2', 'qwen3', 'qwen3_moe', 'nemotron_h', 'gemma4')   # the families whose real template (qlora_nb/assets/chat_templates) renders tools
TEXT_CALL_FAMILIES = ('lfm2',)   # tools list and tool turns rendered, tool calls written by the model as text in the reply
OTHERS = tuple(f for f in FAMILIES if f not in TOOL_FAMILIES + TEXT_CALL_FAMILIES and not vocab_missing(f))   # llm_jp3 where its file is found

@pytest.fixture(scope='module')
def toks():
    cache = {}
    def get(fam):
        if fam not in cache: cache[fam] = family_tokenizer(fam)
        return cache[fam]
    return get

def trained_text(r, tok)->str: return tok.decode([t for t, l in zip(r['input_ids'], r['labels']) if l != -100])
def untrained_text(r, tok)->str: return tok.decode([t for t, l in zip(r['input_ids'], r['labels']) if l == -100])

# What each tool-taking family trains of TOOL_CHAT, token by token: the marked text's trained runs, in order.
TOOL_RUNS = {
    'llama': ['{"name": "get_weather", "parameters": {"city": "東京"}}<|eot_id|>', '東京は晴れです。<|eot_id|>'],
    'qwen2': ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京"}}\n</tool_call><|im_end|>', '東京は晴れです。<|im_end|>'],
    'qwen3': ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京"}}\n</tool_call><|im_end|>',
              '<think>\n\n</think>\n\n東京は晴れです。<|im_end|>'],
}
TOOL_RUNS['qwen3_moe'] = TOOL_RUNS['qwen3']   # the same template
TOOL_RUNS['nemotron_h'] = ['<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "東京"}}]</TOOLCALL>\n<SPECIAL_12>',
                           '東京は晴れです。\n<SPECIAL_12>']   # the template's `<think>\n\n` before the last reply is not trained
TOOL_RUNS['gemma4'] = ['<|tool_call>call:get_weather{city:<|"|>東京<|"|>}<tool_call|><|tool_response>',   # the call ends on <|tool_response> (a stop id):
                       '東京は晴れです。<turn|>']   # the result follows in the same model turn, untrained

def runs(marked_text:str)->list[str]:
    out, rest = [], marked_text
    while '[[' in rest:
        a = rest.index('[['); b = rest.index(']]', a)
        out.append(rest[a+2:b]); rest = rest[b+2:]
    return out

@pytest.mark.parametrize('fam', TOOL_FAMILIES)
def test_tool_chat_trained_token_by_token(toks, fam):
    tok = toks(fam)
    f = template_facts(tok)
    assert (f.tools, f.tool_calls, f.tool_results) == (True, True, True), f
    r = tokenize_conversation(TOOL_CHAT, tok, None, f, tools=[WEATHER])
    m = marked(r, tok)
    assert runs(m) == TOOL_RUNS[fam], m
    rest = untrained_text(r, tok)
    for never in ('あなたは天気を答えるアシスタントです。', '東京の天気は？', '晴れ、21度', '都市の天気を返す'):   # system, user, tool result, tools block
        assert never in rest and never not in trained_text(r, tok), (never, m)

@pytest.mark.parametrize('fam', OTHERS)
def test_tools_refused_where_the_template_cannot_render_them(toks, fam):
    tok = toks(fam)
    f = template_facts(tok)
    assert not f.tool_calls and f.reasoning is None, f
    with pytest.raises(DataError, match=f"^{fam}: its chat template renders no tools list, but 1 chats carry one") as e:
        check_template_needs(f, dict(tools=1, tool_calls=2, tool_results=2), fam)
    assert 'Qwen3, Qwen2.5, Llama 3.1' in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(DataError, match='renders no reasoning'): tokenize_conversation(THINK_CHAT, tok, None, f)

@pytest.mark.parametrize('fam', TEXT_CALL_FAMILIES)
def test_tool_calls_as_text(toks, fam):
    "LFM2's template renders the tools list and tool turns but no `tool_calls` field (it fails on a reply with no text): a chat with a "
    "`tool_calls` field is refused, one with its calls written in the reply trains them, never the tool's result."
    tok = toks(fam)
    f = template_facts(tok)
    assert (f.tools, f.tool_calls, f.tool_results, f.reasoning) == (True, False, True, None), f
    with pytest.raises(DataError, match=f"^{fam}: its chat template renders no tool calls, but 2 assistant turns call tools"):
        check_template_needs(f, dict(tools=1, tool_calls=2, tool_results=2), fam)
    with pytest.raises(DataError, match='renders no tool calls'): tokenize_conversation(TOOL_CHAT, tok, None, f, tools=[WEATHER])
    call = '<|tool_call_start|>[get_weather(city="東京")]<|tool_call_end|>'
    chat = [*TOOL_CHAT[:2], {'role': 'assistant', 'content': call}, {k: v for k, v in TOOL_CHAT[3].items() if k != 'tool_call_id'}, TOOL_CHAT[4]]
    r = tokenize_conversation(chat, tok, None, f, tools=[WEATHER])
    m = marked(r, tok)
    assert runs(m) == [call + '<|im_end|>', '東京は晴れです。<|im_end|>'], m
    assert '<|tool_response_start|>晴れ、21度<|tool_response_end|>' in untrained_text(r, tok), m
    for never in ('あなたは天気を答えるアシスタントです。', '東京の天気は？', '晴れ、21度', '都市の天気を返す'):
        assert never not in trained_text(r, tok), (never, m)

def test_family_table(toks):
    "The table the issue asks for: family × (tools, reasoning), as the probes find it."
    table = {}
    for fam in FAMILIES:
        if vocab_missing(fam): continue
        f = template_facts(toks(fam))
        table[fam] = ('tools' if f.tool_calls else 'refused', f.reasoning and f"{f.reasoning}{'' if f.reasoning_past else ', last turns only'}" or 'refused')
    assert table['qwen3'] == ('tools', 'field, last turns only') and table['llama'] == ('tools', 'refused'), table
    assert table['gemma4'] == ('tools', 'field, last turns only'), table   # Gemma 4: `<|channel>thought` of the turns after the last user turn
    print(json.dumps(table, indent=1))

def test_qwen3_reasoning_last_and_each(toks):
    tok = toks('qwen3'); f = template_facts(tok)
    assert (f.reasoning, f.reasoning_past) == ('field', False)
    r = tokenize_conversation(THINK_CHAT, tok, None, f)
    assert runs(marked(r, tok)) == ['12 です。<|im_end|>', '<think>\n12 に 8 を足すと 20、残りの 1 で 21。\n</think>\n\n21 です。<|im_end|>']
    assert '7 に 3' not in tok.decode(r['input_ids'])   # Qwen3 drops the earlier reply's reasoning ...
    note = reasoning_note(f, chats_needs_of([THINK_CHAT]))
    assert note and '1 of 2 reasoning turns are not trained on' in note   # ... and it is said, with counts
    assert reasoning_note(f, chats_needs_of([THINK_CHAT]), 'each') is None
    # reasoning_turns: each — one row per assistant turn, its own reasoning trained in the context the model sees
    cols = _chat_rows([{'messages': [dict(m) | {'tool_calls': None} for m in THINK_CHAT]}], tok, 1024, 'right', f, dict.fromkeys(STATS, 0), 'each')
    got = [runs(marked(dict(input_ids=i, labels=l), tok)) for i, l in zip(cols['input_ids'], cols['labels'])]
    assert got == [['<think>\n7 に 3 を足すと 10、残りの 2 で 12。\n</think>\n\n12 です。<|im_end|>'],
                   ['<think>\n12 に 8 を足すと 20、残りの 1 で 21。\n</think>\n\n21 です。<|im_end|>']], got

def chats_needs_of(chats):
    from qlora_nb.records import chat_needs
    out = {}
    for c in chats:
        for k, v in chat_needs({'messages': c}).items(): out[k] = out.get(k, 0) + v
    return out

def test_qwen3_agent_turns(toks):
    "Not prefix-stable: the tool result after a reasoning tool call is never trained, the calls and replies are."
    tok = toks('qwen3'); f = template_facts(tok)
    r = tokenize_conversation(AGENT_CHAT, tok, None, f, tools=[CALC])
    assert runs(marked(r, tok)) == ['<tool_call>\n{"name": "calculate", "arguments": {"expression": "23*4"}}\n</tool_call><|im_end|>',
                                    '92 です。<|im_end|>', '<think>\nお礼への返事。\n</think>\n\nどういたしまして。<|im_end|>'], marked(r, tok)
    each = [tokenize_conversation(AGENT_CHAT[:k], tok, None, f, tools=[CALC], last_only=True) for k in (2, 4)]
    assert [runs(marked(x, tok)) for x in each] == [
        ['<think>\n計算ツールを使う。\n</think>\n\n<tool_call>\n{"name": "calculate", "arguments": {"expression": "23*4"}}\n</tool_call><|im_end|>'],
        ['<think>\n結果は 92。\n</think>\n\n92 です。<|im_end|>']]

@pytest.fixture(scope='module')
def tiny():
    return AutoTokenizer.from_pretrained(tiny_model_dir())

@pytest.fixture(scope='module')
def deepseek(tiny):
    trl = pytest.importorskip('trl')
    t = copy.deepcopy(tiny)
    t.add_special_tokens({'bos_token': '<s>', 'additional_special_tokens': ['<｜end▁of▁sentence｜>', '<｜User｜>', '<｜Assistant｜>', '<think>', '</think>']})
    d = Path(trl.__file__).parent/'chat_templates'
    return t, d

def test_deepseek_r1_distill_reasoning(deepseek):
    "trl's DeepSeek-R1-distill templates: the training variant takes reasoning inline (<think> in the reply); the original strips it, so it is refused."
    t, d = deepseek
    train_t = copy.deepcopy(t); train_t.chat_template = (d/'deepseek_r1_distill_training.jinja').read_text(encoding='utf-8')
    f = template_facts(train_t)
    assert (f.reasoning, f.reasoning_past, f.tool_calls) == ('inline', True, False), f
    r = tokenize_conversation(THINK_CHAT, train_t, None, f)
    eos = train_t.decode(train_t.convert_tokens_to_ids(['<｜end▁of▁sentence｜>']))   # the tiny tokenizer's decoder writes its ▁ as a space
    assert runs(marked(r, train_t)) == [f'<｜Assistant｜><think>\n7 に 3 を足すと 10、残りの 2 で 12。\n</think>\n\n12 です。{eos}',
                                        f'<｜Assistant｜><think>\n12 に 8 を足すと 20、残りの 1 で 21。\n</think>\n\n21 です。{eos}'], marked(r, train_t)
    orig = copy.deepcopy(t); orig.chat_template = (d/'deepseek_r1_distill.jinja').read_text(encoding='utf-8')
    fo = template_facts(orig)
    assert fo.reasoning is None
    with pytest.raises(DataError, match='deepseek: its chat template renders no reasoning, but 2 assistant turns carry'):
        check_template_needs(fo, chats_needs_of([THINK_CHAT]), 'deepseek')

def test_tiny_template_renders_everything(tiny):
    f = template_facts(tiny)
    assert f == TemplateFacts(True, True, True, True, True, 'field', True)
    r = tokenize_conversation(AGENT_CHAT, tiny, None, f, tools=[CALC])
    assert trained_text(r, tiny).count('<think>') == 3 and '92<|im_end|>' not in trained_text(r, tiny)

def test_chat_template_kwargs_reach_the_template(tiny):
    t = copy.deepcopy(tiny)
    t.chat_template = tiny.chat_template.replace("{{- message['content'] or '' }}", "{{- (mode or '') + (message['content'] or '') }}")
    f = template_facts(t)
    rows = [{'messages': [dict(m) | dict.fromkeys(('reasoning_content', 'tool_calls', 'tool_call_id', 'name')) for m in THINK_CHAT[:2]],
             'tools': None, 'chat_template_kwargs': kw} for kw in (None, json.dumps({'mode': '記録:'}))]
    cols = _chat_rows(rows, t, 1024, 'right', f, dict.fromkeys(STATS, 0), 'last', {'mode': '設定:'})
    got = [trained_text(dict(input_ids=i, labels=l), t) for i, l in zip(cols['input_ids'], cols['labels'])]
    assert got == ['設定:12 です。<|im_end|>', '記録:12 です。<|im_end|>'], got   # the config's switches, a record's own winning

def test_cache_key_covers_options(tiny):
    d = load_config()['data']
    keys = {tokenized_key('fp', tiny, {**d, **x}) for x in ({}, {'reasoning_turns': 'each'}, {'chat_template_kwargs': {'enable_thinking': False}})}
    assert len(keys) == 3

BAD = [
    {'messages': [{'role': 'user', 'content': '天気は？'}, {'role': 'tool', 'content': '晴れ'}, {'role': 'assistant', 'content': '晴れです。'}]},
    {'messages': [{'role': 'user', 'content': '天気は？'},
                  {'role': 'assistant', 'content': None, 'tool_calls': [{'type': 'function', 'function': {'name': 'get_weather', 'arguments': '{city: 東京}'}}]},
                  {'role': 'tool', 'content': '晴れ'}, {'role': 'assistant', 'content': '晴れです。'}]},
    {'tools': [{'name': 'get_weather'}], 'messages': [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'ok'}]},
]

def test_bad_tool_records_reported_together(tmp_path):
    p = tmp_path/'bad.jsonl'
    p.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in BAD), encoding='utf-8')
    with pytest.raises(DataError) as e: check_data(p)
    msg = str(e.value)
    assert msg.startswith('3 problem(s) in the training data'), msg
    assert f'{p}, line 1: messages[1] is a tool result with no tool call before it' in msg
    assert f'{p}, line 2: messages[1].tool_calls[0].function.arguments is a string that is not JSON' in msg
    assert f'{p}, line 3: tools[0] is not a function schema' in msg
    r = run('inspect', *sets(f'training_data_json_path={p}'), cwd=tmp_path)
    refused(r, '3 problem(s)', 'line 2: messages[1].tool_calls[0].function.arguments')

def test_canonical_record_kept_in_the_arrow_cache(tmp_path):
    rec = {'tools': [WEATHER], 'chat_template_kwargs': {'enable_thinking': False}, 'messages': [
        TOOL_CHAT[1], {'role': 'assistant', 'content': None, 'thinking': 'ツールで調べる。',
                       'tool_calls': [{'type': 'function', 'function': {'name': 'get_weather', 'arguments': '{"city": "東京"}'}}]},
        TOOL_CHAT[3], TOOL_CHAT[4]]}
    p = tmp_path/'tools.json'
    p.write_text(json.dumps([rec], ensure_ascii=False), encoding='utf-8')
    row = chat_from_row(load_chats(p)[0])
    assert row == canonical_chat(rec)
    assert row['messages'][1]['reasoning_content'] == 'ツールで調べる。' and row['messages'][1]['tool_calls'][0]['function']['arguments'] == {'city': '東京'}
    assert chats_needs(p) == dict(tools=1, tool_calls=1, tool_results=1, reasoning=1, reasoning_earlier=0)

def test_refused_before_the_model_loads(tmp_path, tiny):
    "A template without tools meets tool data: one sentence from `tokenized_chats`, nothing tokenized."
    p = tmp_path/'tools.jsonl'
    p.write_text(json.dumps({'tools': [WEATHER], 'messages': TOOL_CHAT}, ensure_ascii=False) + '\n', encoding='utf-8')
    with pytest.raises(DataError, match='^Mistral v0.3: its chat template renders no tools list, but 1 chats carry one'):
        tokenized_chats(p, tiny, load_config()['data'], facts=TemplateFacts(False, True), name='Mistral v0.3')
    mistral = replica_dir('mistral')
    r = run('inspect', *sets(f'model_name={mistral}', f'training_data_json_path={p}'), cwd=tmp_path)
    refused(r, f'{mistral}: its chat template renders no tools list')

def test_train_on_tool_and_reasoning_data_each(tmp_path):
    "One short train through the CLI on tool-calling and reasoning chats, a row per assistant turn."
    p = tmp_path/'mixed.jsonl'
    p.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in (
        {'tools': [WEATHER], 'messages': TOOL_CHAT}, {'messages': THINK_CHAT}, {'tools': [CALC], 'messages': AGENT_CHAT})), encoding='utf-8')
    r = run('train', *sets(f'training_data_json_path={p}', f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter',
                           'training.max_steps=2', 'data.reasoning_turns=each', 'data.max_tokens_per_batch=null'), cwd=tmp_path, rc=0)
    assert (tmp_path/'adapter'/'adapter_config.json').exists()

def test_bundled_samples_left_out_where_the_template_cannot_render_them(tmp_path):
    "The embedded default's own tool and reasoning chats are left out (and said) for a family that cannot render them; a user's are refused."
    gemma = replica_dir('gemma3')
    r = run('inspect', *sets(f'model_name={gemma}'), cwd=tmp_path, rc=0)
    assert '6 of the bundled sample chats (those with tool calls or reasoning) are left out' in r.stdout and '300 rows to train on' in r.stdout, r.stdout
