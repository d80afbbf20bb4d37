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
from qlora_nb.template import TemplateFacts, check_template_needs, reasoning_note, template_facts, tokenize_conversation, with_call_ids
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

TOOL_FAMILIES = ('llama', 'qwen2', 'qwen3', 'qwen3_moe', 'nemotron_h')   # the families whose real template (qlora_nb/assets/chat_templates) renders tools
TOOL_FAMILIES += ('mistral', 'mistral_nemo')   # Mistral's real templates (#20): [AVAILABLE_TOOLS] before the last user turn, [TOOL_CALLS] with 9-character ids
TOOL_FAMILIES += ('gpt_oss',)   # the harmony template: calls on the commentary channel, ended by <|call|>
TOOL_FAMILIES += ('granitemoehybrid',)   # Granite 4.0's real template: tools in the system turn, <tool_call> JSON
TOOL_FAMILIES += ('gemma4',)   # Gemma 4's real template: tools, calls and results inside the model turn
TEXT_CALL_FAMILIES = ('lfm2',)   # tools list and tool turns rendered, tool calls written by the model as text in the reply
TEXT_CALL_FAMILIES += ('granite',)   # Granite 3.3's real template (#20): available_tools and tool turns, calls written as `<|tool_call|>[…]` text
OTHERS = tuple(f for f in FAMILIES if f not in TOOL_FAMILIES + TEXT_CALL_FAMILIES and not vocab_missing(f))   # llm_jp3 where its file is found
NO_TOOLS_LIST = ('deepseek_v3',)   # calls and results rendered, no tools list (DeepSeek-V3's: the tools are described in the system prompt)
OTHERS = tuple(f for f in OTHERS if f not in NO_TOOLS_LIST)

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
TOOL_RUNS['mistral'] = ['[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "東京"}, "id": "call00001"}]</s>', '東京は晴れです。</s>']
TOOL_RUNS['mistral_nemo'] = ['[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "東京"}, "id": "call00001"}]</s>', '東京は晴れです。</s>']
TOOL_RUNS['nemotron_h'] = ['<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "東京"}}]</TOOLCALL>\n<SPECIAL_12>',
                           '東京は晴れです。\n<SPECIAL_12>']   # the template's `<think>\n\n` before the last reply is not trained
TOOL_RUNS['gpt_oss'] = [' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "東京"}<|call|>',   # after the prompt's `<|start|>assistant`
                        '<|channel|>final<|message|>東京は晴れです。<|return|>']   # the tool's result goes back JSON-quoted, untrained
TOOL_RUNS['granitemoehybrid'] = ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京"}}\n</tool_call><|end_of_text|>',
                                 '東京は晴れです。<|end_of_text|>']   # Granite 4.0: the `\n` after each `<|end_of_text|>` is not trained
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

@pytest.mark.parametrize('fam', ('mistral', 'mistral_nemo'))
def test_call_ids_given_where_the_template_needs_them(toks, fam):
    "Mistral's templates refuse tool-call ids other than 9 letters and digits: the probe finds it, and each call without such an id "
    "gets one made from the chat (the same every time), its tool result pointing at it; ids that fit are kept."
    tok = toks(fam)
    f = template_facts(tok)
    assert (f.call_ids, f.json_arguments) == (True, False), f
    assert not template_facts(toks('qwen3')).call_ids
    openai = copy.deepcopy(TOOL_CHAT)
    openai[2]['tool_calls'][0]['id'] = openai[3]['tool_call_id'] = 'call_8Kq2mZxY'
    bare = [{k: v for k, v in m.items() if k != 'tool_call_id'} for m in TOOL_CHAT]
    bare[2] = {**bare[2], 'tool_calls': [{k: v for k, v in c.items() if k != 'id'} for c in bare[2]['tool_calls']]}
    for chat in (openai, bare):
        got = with_call_ids(chat)
        i = got[2]['tool_calls'][0]['id']
        assert len(i) == 9 and i.isalnum() and got[3]['tool_call_id'] == i and with_call_ids(chat) == got
        r = tokenize_conversation(chat, tok, None, f, tools=[WEATHER])
        assert runs(marked(r, tok))[0] == TOOL_RUNS[fam][0].replace('call00001', i), marked(r, tok)
        assert f'"call_id": "{i}"' in untrained_text(r, tok)
    assert with_call_ids(TOOL_CHAT)[2]['tool_calls'][0]['id'] == 'call00001'   # an id that fits is kept
    two = [TOOL_CHAT[1], {'role': 'assistant', 'content': None, 'tool_calls': [
        {'type': 'function', 'id': i, 'function': {'name': 'get_weather', 'arguments': {'city': c}}} for i, c in (('a', '東京'), ('c', '大阪'))]},
           {'role': 'tool', 'content': '雨', 'tool_call_id': 'b'}, {'role': 'tool', 'content': '晴れ', 'tool_call_id': 'a'}, TOOL_CHAT[4]]
    got = with_call_ids(two)
    assert [got[3]['tool_call_id'], got[2]['tool_call_id']] == [c['id'] for c in got[1]['tool_calls']]   # named first, the other in order

def _mistral_common_request(chat, tools):
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, ToolMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall, Tool, ToolCall
    def msg(m):
        if m['role'] == 'system': return SystemMessage(content=m['content'])
        if m['role'] == 'user': return UserMessage(content=m['content'])
        if m['role'] == 'tool': return ToolMessage(content=m['content'], tool_call_id=m['tool_call_id'])
        return AssistantMessage(content=m.get('content'), tool_calls=[
            ToolCall(id=c['id'], function=FunctionCall(name=c['function']['name'], arguments=json.dumps(c['function']['arguments'], ensure_ascii=False)))
            for c in m['tool_calls']] if m.get('tool_calls') else None)
    return ChatCompletionRequest(messages=[msg(m) for m in chat], tools=[Tool(function=Function(**t['function'])) for t in tools])

@pytest.mark.parametrize('fam,vocab', [('mistral', 'mistral_instruct_tokenizer_240323.model.v3'), ('mistral_nemo', 'tekken_240718.json')])
def test_mistral_tool_chat_as_mistral_common_encodes_it(toks, fam, vocab):
    "The token ids of a tool chat through the real template and the replica's real vocabulary are mistral-common's own encoding "
    "(v3 SentencePiece; Tekken), [AVAILABLE_TOOLS] before the last user turn in both. Two differences, neither trained: a tool result "
    "that is not JSON, which mistral-common writes as a JSON string and the template as it is (`\"content\": 晴れ、21度`); and a system "
    "prompt, which mistral-common (and the template, at inference) puts in the last user turn and qlora_nb folds into the first, so "
    "that every reply is trained seeing it (the same where there is one user turn)."
    pytest.importorskip('mistral_common')
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    from qlora_nb.families import package_file
    mt = MistralTokenizer.from_file(str(package_file('mistral_common', 'data', vocab)), mode=ValidationMode.finetuning)
    tok = toks(fam); f = template_facts(tok)
    chat = [*TOOL_CHAT[:3], {**TOOL_CHAT[3], 'content': '{"天気": "晴れ", "気温": 21}'}, TOOL_CHAT[4]]
    for c in (chat, [*chat[1:], {'role': 'user', 'content': '大阪は？'}, {'role': 'assistant', 'content': '大阪は雨です。'}]):
        ours = tokenize_conversation(c, tok, None, f, tools=[WEATHER])['input_ids']
        assert ours == mt.encode_chat_completion(_mistral_common_request(c, [WEATHER])).tokens, tok.decode(ours)
    theirs = tok.decode(mt.encode_chat_completion(_mistral_common_request(TOOL_CHAT, [WEATHER])).tokens)   # the same vocabulary
    assert '"content": "' in theirs and '"content": 晴れ' in tok.decode(tokenize_conversation(TOOL_CHAT, tok, None, f, tools=[WEATHER])['input_ids'])

def test_deepseek_v3_tool_calls_with_json_string_arguments(toks):
    "DeepSeek-V3's template writes a call's arguments as they are: the probe finds it, and the record's arguments go in as a JSON string; "
    "it renders no tools list (the tools belong in the system prompt), so data that carries one is refused."
    tok = toks('deepseek_v3'); f = template_facts(tok)
    assert (f.tools, f.tool_calls, f.tool_results, f.json_arguments, f.call_ids) == (False, True, True, True, False), f
    r = tokenize_conversation(TOOL_CHAT, tok, None, f)
    m = marked(r, tok)
    assert runs(m) == ['<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "東京"}\n```<｜tool▁call▁end｜>'
                       '<｜tool▁calls▁end｜><｜end▁of▁sentence｜>', '東京は晴れです。<｜end▁of▁sentence｜>'], m
    for never in ('あなたは天気を答えるアシスタントです。', '東京の天気は？', '晴れ、21度'):
        assert never in untrained_text(r, tok) and never not in trained_text(r, tok), (never, m)
    with pytest.raises(DataError, match='^deepseek_v3: its chat template renders no tools list'):
        check_template_needs(f, dict(tools=1, tool_calls=1, tool_results=1), 'deepseek_v3')

@pytest.mark.parametrize('fam', OTHERS)
def test_tools_refused_where_the_template_cannot_render_them(toks, fam):
    tok = toks(fam)
    f = template_facts(tok)
    assert not f.tool_calls and f.reasoning is None, f
    with pytest.raises(DataError, match=f"^{fam}: its chat template renders no tools list, but 1 chats carry one") as e:
        check_template_needs(f, dict(tools=1, tool_calls=2, tool_results=2), fam)
    assert 'Qwen3, Qwen2.5, Llama 3.1' in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(DataError, match='renders no reasoning'): tokenize_conversation(THINK_CHAT, tok, None, f)

# each text-call family: its calls as the model writes them, its end of turn, its tool result as rendered, how it takes reasoning
TEXT_CALLS = {'lfm2': ('<|tool_call_start|>[get_weather(city="東京")]<|tool_call_end|>', '<|im_end|>',
                       '<|tool_response_start|>晴れ、21度<|tool_response_end|>', None)}
TEXT_CALLS['granite'] = ('<|tool_call|>[{"name": "get_weather", "arguments": {"city": "東京"}}]', '<|end_of_text|>',
                         '<|start_of_role|>tool<|end_of_role|>晴れ、21度<|end_of_text|>', 'inline')   # its text mentions <think>, content goes through

@pytest.mark.parametrize('fam', TEXT_CALL_FAMILIES)
def test_tool_calls_as_text(toks, fam):
    "LFM2's and Granite 3.3's templates render the tools list and tool turns but no `tool_calls` field (LFM2's fails on a reply with no "
    "text): a chat with a `tool_calls` field is refused, one with its calls written in the reply trains them, never the tool's result."
    tok = toks(fam)
    f = template_facts(tok)
    call, eot, result, reasoning = TEXT_CALLS[fam]
    assert (f.tools, f.tool_calls, f.tool_results, f.reasoning) == (True, False, True, reasoning), f
    with pytest.raises(DataError, match=f"^{fam}: its chat template renders no tool calls, but 2 assistant turns call tools"):
        check_template_needs(f, dict(tools=1, tool_calls=2, tool_results=2), fam)
    with pytest.raises(DataError, match='renders no tool calls'): tokenize_conversation(TOOL_CHAT, tok, None, f, tools=[WEATHER])
    chat = [*TOOL_CHAT[:2], {'role': 'assistant', 'content': call}, {k: v for k, v in TOOL_CHAT[3].items() if k != 'tool_call_id'}, TOOL_CHAT[4]]
    r = tokenize_conversation(chat, tok, None, f, tools=[WEATHER])
    m = marked(r, tok)
    assert runs(m) == [call + eot, '東京は晴れです。' + eot], m
    assert result in untrained_text(r, tok), m
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
    assert table['gpt_oss'] == ('tools', 'field, last turns only'), table   # `thinking` (the analysis channel), filled by transformers from reasoning_content
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

def test_gpt_oss_reasoning_and_agent_turns(toks):
    "gpt-oss's harmony template: reasoning (the analysis channel) only in the last reply, which ends with <|return|>, earlier ones with <|end|>; "
    "a tool call ends with <|call|>, its analysis dropped once a reply follows (the call is found by the token its own rendering ends with)."
    tok = toks('gpt_oss'); f = template_facts(tok)
    assert (f.reasoning, f.reasoning_past) == ('field', False)
    assert runs(marked(tokenize_conversation(THINK_CHAT, tok, None, f), tok)) == ['<|channel|>final<|message|>12 です。<|end|>',
        '<|channel|>analysis<|message|>12 に 8 を足すと 20、残りの 1 で 21。<|end|><|start|>assistant<|channel|>final<|message|>21 です。<|return|>']
    r = tokenize_conversation(AGENT_CHAT, tok, None, f, tools=[CALC])
    assert runs(marked(r, tok)) == [' to=functions.calculate<|channel|>commentary json<|message|>{"expression": "23*4"}<|call|>',
                                    '<|channel|>final<|message|>92 です。<|end|>',
                                    '<|channel|>analysis<|message|>お礼への返事。<|end|><|start|>assistant<|channel|>final<|message|>どういたしまして。<|return|>'], marked(r, tok)
    each = [tokenize_conversation(AGENT_CHAT[:k], tok, None, f, tools=[CALC], last_only=True) for k in (2, 4)]
    assert [runs(marked(x, tok)) for x in each] == [
        ['<|channel|>analysis<|message|>計算ツールを使う。<|end|><|start|>assistant to=functions.calculate<|channel|>commentary json<|message|>{"expression": "23*4"}<|call|>'],
        ['<|channel|>analysis<|message|>結果は 92。<|end|><|start|>assistant<|channel|>final<|message|>92 です。<|return|>']]

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
    gemma = replica_dir('gemma3')
    r = run('inspect', *sets(f'model_name={gemma}', f'training_data_json_path={p}'), cwd=tmp_path)
    refused(r, f'{gemma}: its chat template renders no tools list')

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

def test_seed_format_refuses_tool_and_reasoning_data(tmp_path, tiny):
    "The seed recipe's `role: content` lines cannot write tools, calls or reasoning: a user's data with them is refused in one sentence, nothing tokenized; the bundled samples with them are left out and said."
    cfg = load_config(overrides=['data.format=seed'])
    for name, rec, what in (('tools', {'tools': [WEATHER], 'messages': TOOL_CHAT}, 'renders no tools list, but 1 chats carry one'),
                            ('think', {'messages': THINK_CHAT}, 'renders no reasoning, but 2 assistant turns carry reasoning_content')):
        p = tmp_path/f'{name}.jsonl'
        p.write_text(json.dumps(rec, ensure_ascii=False) + '\n', encoding='utf-8')
        with pytest.raises(DataError, match=f'^data.format=seed writes each message as `role: content` and {what}'):
            tokenized_chats(p, tiny, cfg['data'])
    r = run('inspect', *sets(f'training_data_json_path={tmp_path}/tools.jsonl', 'data.format=seed'), cwd=tmp_path)
    refused(r, 'data.format=seed writes each message as `role: content` and renders no tools list')
    ds, st = tokenized_chats('builtin:sample_chats', tiny, cfg['data'])
    assert st['left_out_unrenderable'] == 6 and len(ds) == st['conversations'] - 6, st
