"Every chat template that `trl` ships, through `tokenize_conversation`: replies and their end-of-turn token are trained, nothing else."
import copy
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from qlora_nb.template import _has_generation_markers, ends_turn, template_facts, tokenize_conversation
from qlora_nb.tiny import tiny_model_dir

trl = pytest.importorskip('trl')
TEMPLATES = sorted((Path(trl.__file__).parent/'chat_templates').glob('*.jinja'))
# The special tokens these templates write; a real tokenizer of each family has them as single tokens.
SPECIAL = ['<|eot_id|>', '<|start_header_id|>', '<|end_header_id|>', '<|begin_of_text|>', '<s>', '</s>', '<|im_start|>',
           '<start_of_turn>', '<end_of_turn>', '<|turn>', '<turn|>', '<|end|>', '<|user|>', '<|assistant|>', '<|system|>',
           '<|return|>', '<|start|>', '<|message|>', '<|channel|>', '<|eot|>', '<|END_OF_TURN_TOKEN|>', '<|START_OF_TURN_TOKEN|>',
           '<|USER_TOKEN|>', '<|CHATBOT_TOKEN|>', '<|SYSTEM_TOKEN|>', '<|START_RESPONSE|>', '<|END_RESPONSE|>',
           '<｜end▁of▁sentence｜>', '<｜begin▁of▁sentence｜>', '<｜User｜>', '<｜Assistant｜>', '<think>', '</think>', '<|endoftext|>']
CHAT = [{'role': 'system', 'content': 'あなたは簡潔に答えるアシスタントです。'},
        {'role': 'user', 'content': 'フランスの首都はどこですか？'},
        {'role': 'assistant', 'content': 'フランスの首都はパリです。'},
        {'role': 'user', 'content': '3 + 4 は？'},
        {'role': 'assistant', 'content': '答えは 7 です。'}]

@pytest.fixture(scope='module')
def base():
    t = AutoTokenizer.from_pretrained(tiny_model_dir())
    t.add_special_tokens({'bos_token': '<s>', 'additional_special_tokens': SPECIAL})
    return t

def usable(tok, chat):
    "Whether the template renders a text-only chat like this one at all (some refuse system prompts or want image parts)."
    try: text = tok.apply_chat_template(chat, tokenize=False)
    except Exception: return False
    return all(m['content'] in text for m in chat if m['role'] == 'user')

@pytest.mark.parametrize('path', TEMPLATES, ids=lambda p: p.stem)
@pytest.mark.parametrize('with_system', [True, False], ids=['system', 'nosystem'])
def test_template(base, path, with_system):
    tok = copy.deepcopy(base)
    tok.chat_template = path.read_text(encoding='utf-8')
    chat = CHAT if with_system else CHAT[1:]
    if not usable(tok, chat): pytest.skip('template does not render a text-only chat with these roles')
    r = tokenize_conversation(chat, tok, max_length=None)
    assert tokenize_conversation(chat, tok, None, template_facts(tok)) == r   # facts found once give the same rows
    assert len(r['input_ids']) == len(r['labels']) == len(r['attention_mask'])
    # the trained tokens, as runs of consecutive positions
    runs, cur = [], []
    for t, l in zip(r['input_ids'], r['labels']):
        if l != -100: cur.append(t)
        elif cur: runs.append(cur); cur = []
    if cur: runs.append(cur)
    pieces = [tok.decode(x) for x in runs]
    trained = ''.join(pieces)
    for m in chat:
        if m['role'] == 'assistant': assert m['content'] in trained, (path.stem, pieces)
        else: assert m['content'] not in trained and m['content'][-4:] not in trained, (path.stem, pieces)
    replies = [m['content'] for m in chat if m['role'] == 'assistant']
    # each reply's run ends with an end-of-turn special token (or, for templates without one, EOS after the last reply)
    for reply in replies:
        run = next(p for p in pieces if reply in p)
        tail = run[run.index(reply)+len(reply):].strip()
        if reply == replies[-1] or ends_turn(tok):
            ends = [x for s in [*SPECIAL, tok.eos_token] for x in (s, s.replace('▁', ' '))]   # SentencePiece decodes ▁ as a space, in special tokens too
            assert any(tail.endswith(s) or tail.startswith(s) for s in ends), (path.stem, 'marker' if _has_generation_markers(tok) else 'prefix', pieces)
    # no template should give a row without trained tokens
    assert sum(l != -100 for l in r['labels']) > 0

def test_both_kinds_covered(base):
    kinds = set()
    for p in TEMPLATES:
        tok = copy.deepcopy(base); tok.chat_template = p.read_text(encoding='utf-8')
        if usable(tok, CHAT): kinds.add(_has_generation_markers(tok))
    assert kinds == {True, False}
