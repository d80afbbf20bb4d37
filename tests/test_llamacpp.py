"""Exports proven in llama.cpp itself (through llama-cpp-python), for every family the converter takes: llama.cpp tokenizes
rendered chats to the tokenizer's ids, adds BOS once, types every end of turn CONTROL and stops there, computes the merged
model's logits and greedy continuations, quantizes, and measures perplexity. Writes the llama.cpp column of nbs/family_matrix.json.

Skipped, with the reason, where llama-cpp-python is not installed; never in CI (CI=true), where its absence fails."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from conftest import REPO, run_env, train_adapter

try: import llama_cpp   # noqa: F401
except ImportError:
    if os.environ.get('CI', '').lower() in ('1', 'true'):
        raise RuntimeError("CI runs the llama.cpp tests: install llama-cpp-python as .ci/run does (pip install -e '.[llamacpp]' with its CMAKE_ARGS).")
    pytest.skip("llama-cpp-python is not installed: pip install -e '.[llamacpp]' (see the README's install section)", allow_module_level=True)

from qlora_nb.export import (convert_to_gguf, export_gguf, llamacpp_greedy, llamacpp_logits, llamacpp_tokens, llamacpp_vocab,
                             load_gguf, stop_strings)
from qlora_nb.families import FAMILIES, replica_dir

# Rendered multi-turn chats: Japanese, English, emoji, code, leading and doubled spaces, full-width characters, a newline at the end.
CHATS = [
    [{'role': 'system', 'content': 'あなたは簡潔に答えるアシスタントです。'},
     {'role': 'user', 'content': '日本の首都はどこですか？'}, {'role': 'assistant', 'content': '東京です。🗼'},
     {'role': 'user', 'content': 'And  the capital of France?  '}, {'role': 'assistant', 'content': ' Paris.  It is 🇫🇷.'}],
    [{'role': 'user', 'content': '  Write `add` in Python:\n```python\ndef add(a, b):\n    return a + b\n```\n'},
     {'role': 'assistant', 'content': "```python\nprint(add(1, 2))  # 3\n```"},
     {'role': 'user', 'content': 'ＡＢＣ１２３　全角の文字と　スペース。'}, {'role': 'assistant', 'content': 'ｶﾀｶﾅ も 😀😀 大丈夫です。\n'}],
]
PROMPTS = [[{'role': 'user', 'content': '日本の首都はどこですか？'}], [{'role': 'user', 'content': 'What is 3 + 4?'}]]
# the families whose replicas llama.cpp's converter takes — SentencePiece BPE ones and those on a real vocabulary, but not a unigram
# one (tests/test_families.py says why not for the rest) — and the embedded default
CASES = ['default'] + [f for f in FAMILIES if (FAMILIES[f].kind == 'sentencepiece' or FAMILIES[f].vocab) and f != 'gpt_neox'
                       and FAMILIES[f].kind != 'sentencepiece_unigram']
# the embedded default, trained long enough to end its replies (the stop test needs a model that stops): 60 steps at 5e-3
# stopped on both prompts until tool-call and reasoning chats joined the sample data; 100 at 2e-3 stops on them with 1 or 2 threads
SETS = ['training.max_steps=100', 'training.learning_rate=2e-3', 'training.save_steps=1000', 'training.disable_tqdm=true']
RESULTS = {}
# where llama.cpp and the tokenizer are known to differ, and why (the test then expects the difference: strict xfail)
KNOWN = {'mistral': "runs of spaces: transformers' fast tokenizer (from Mistral's v3 SentencePiece model) splits `x  Paris` "
                    "as x ▁▁ Par is, SentencePiece and llama.cpp as x ▁ ▁Paris"}

def record(case, **kw): RESULTS.setdefault(case, {}).update(kw)

@pytest.fixture(scope='module')
def root(tmp_path_factory): return tmp_path_factory.mktemp('llamacpp')

@pytest.fixture(scope='module')
def adapter(root): return train_adapter(root/'default', SETS)

class Case:
    "One model under test: its transformers folder (float32 reference), tokenizer, stop ids, and its GGUFs made once."
    def __init__(self, name, root, adapter):
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        from qlora_nb.template import stop_token_ids
        from qlora_nb.infer import merge_adapter
        self.name, self.dir, self.adapter = name, root/name, adapter
        self.model_dir = merge_adapter(adapter, self.dir/'merged', dtype='float32') if name == 'default' else replica_dir(name)
        self.tok = AutoTokenizer.from_pretrained(self.model_dir)
        self.stops = stop_token_ids(self.tok, GenerationConfig.from_pretrained(self.model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()
        self.llms = {}
    def gguf(self, outtype):
        f = self.dir/outtype/'model.gguf'   # named model: llama.cpp changes a Phi-3's tokenization by the name in the file
        if f.exists(): return f
        if self.adapter: export_gguf(self.adapter, f, outtype=outtype)   # the adapter's export: its tokenizer.model found beside the base
        else: convert_to_gguf(self.model_dir, f, outtype)
        return f
    def llm(self, outtype='f32'):
        if outtype not in self.llms: self.llms[outtype] = load_gguf(self.gguf(outtype), n_ctx=512, logits_all=True)
        return self.llms[outtype]
    def render(self, msgs, gen=False):
        from qlora_nb.template import fold_system
        return self.tok.apply_chat_template(fold_system(msgs, self.tok), tokenize=False, add_generation_prompt=gen)
    def ids(self, text): return self.tok(text, add_special_tokens=False)['input_ids']

_CASES = {}

@pytest.fixture(scope='module')
def case(request, root, adapter):
    name = request.param
    if name not in _CASES: _CASES[name] = Case(name, root, adapter if name == 'default' else None)
    return _CASES[name]

@pytest.fixture(scope='module', autouse=True)
def close_and_write():
    yield
    for c in _CASES.values():
        for llm in c.llms.values(): llm.close()
    write_matrix()

def write_matrix():
    "The llama.cpp column of nbs/family_matrix.json, when every case ran every check."
    keys = {'tokens', 'bos', 'control', 'rel_l2', 'greedy'}
    if set(RESULTS) != set(CASES) or not all(keys <= set(r) for r in RESULTS.values()): return
    p = REPO/'nbs'/'family_matrix.json'
    m = json.loads(p.read_text(encoding='utf-8'))
    for fam in FAMILIES:   # every family, also one the family matrix has not written yet (its run may be in pytest-xdist's other process)
        r, x = m['families'].setdefault(fam, {}), RESULTS.get(fam)
        ok = x is not None and all(x[k] is True for k in ('tokens', 'bos', 'control', 'greedy')) and x['rel_l2'] < 1e-2
        r['llama.cpp'] = ('— (no GGUF: see export)' if x is None else True if ok else f"❌ {x['tokens']}" if isinstance(x['tokens'], str) else False)
        if x: r['llama.cpp_detail'] = x
    m['default'] = {'llama.cpp': RESULTS['default']}
    tmp = p.with_suffix(f'.{os.getpid()}.tmp'); tmp.write_text(json.dumps(m, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    os.replace(tmp, p)   # whole, under pytest-xdist's other process

both = pytest.mark.parametrize('case', CASES, indirect=True)

def c_template(llm, msgs)->str|None:
    "A chat rendered by llama.cpp's built-in template engine (`llama_chat_apply_template`) from the GGUF's template; None when it does not recognise it."
    import ctypes, llama_cpp as L
    tmpl = L.llama_model_chat_template(llm.model, None)
    chat = (L.llama_chat_message * len(msgs))(*[L.llama_chat_message(m['role'].encode(), m['content'].encode()) for m in msgs])
    buf = ctypes.create_string_buffer(1 << 16)
    n = L.llama_chat_apply_template(tmpl, chat, len(msgs), True, buf, len(buf))
    return buf.raw[:n].decode('utf-8') if 0 < n <= len(buf) else None

@both
def test_tokenization(case):
    "llama.cpp's ids for every rendered chat (special tokens parsed, nothing added) are exactly the tokenizer's."
    llm = case.llm()
    for chat in CHATS:
        for gen, msgs in ((False, chat), (True, chat[:-1])):
            text = case.render(msgs, gen)
            want, got = case.ids(text), llamacpp_tokens(llm, text)
            if got != want and case.name in KNOWN:
                record(case.name, tokens=KNOWN[case.name])
                pytest.xfail(KNOWN[case.name])
            record(case.name, tokens=got == want)
            assert got == want, (text, case.tok.convert_ids_to_tokens(want), [llm.detokenize([i], special=True) for i in got])
    assert case.name not in KNOWN, f"{case.name} now tokenizes as the tokenizer does: take it out of KNOWN"

@both
def test_bos_once(case):
    """A chat as llama.cpp's chat engines build it begins with one BOS: llama-cpp-python's (the GGUF's Jinja template, then the
    ids without adding BOS) and llama.cpp's built-in one (its own format, then BOS added as the GGUF says)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from qlora_nb.template import fold_system
    llm, v = case.llm(), llamacpp_vocab(case.llm())
    msgs = fold_system(CHATS[0][:-1], case.tok)
    tmpl = llm.metadata.get('tokenizer.chat_template')
    assert tmpl, 'no chat template in the GGUF'
    r = Jinja2ChatFormatter(tmpl, eos_token=case.tok.eos_token, bos_token=case.tok.bos_token or '')(messages=msgs)
    assert r.prompt == case.render(CHATS[0][:-1], gen=True)   # the same text as transformers renders
    ids = llm.tokenize(r.prompt.encode('utf-8'), add_bos=not r.added_special, special=True)   # as create_chat_completion does
    bos = case.tok.bos_token_id
    assert bos is None or v['bos'] == bos, (v['bos'], bos)
    n_bos = lambda x: 0 if bos is None or x is None else sum(1 for i in x[:2] if i == bos)
    want = 1 if bos is not None and (case.ids(r.prompt)[:1] == [bos] or v['add_bos']) else 0
    c = c_template(llm, msgs)
    c_ids = llamacpp_tokens(llm, c, add_bos=True) if c is not None else None
    # a rendered chat that already holds BOS, handed to llama.cpp as a plain prompt, gets a second one where the GGUF adds BOS:
    # llama-server strips the template's BOS itself; llama-cli -p with a pre-rendered chat does not
    raw = llamacpp_tokens(llm, r.prompt, add_bos=True)
    same = ids == case.ids(r.prompt) or case.name in KNOWN   # the ids themselves: test_tokenization
    record(case.name, bos=same and n_bos(ids) == want and (c is None or n_bos(c_ids) == want),
           builtin_template=c is not None, bos_doubled_in_a_raw_prompt=n_bos(raw) == 2)
    assert same and n_bos(ids) == want, (ids[:3], v)
    assert c is None or n_bos(c_ids) == want, (c, c_ids[:3])

@both
def test_end_of_turn_tokens_are_control(case):
    "EOS and the template's end of turn: llama.cpp's eos/eot ids, typed CONTROL, ends of generation; every stop token CONTROL."
    from qlora_nb.template import end_of_turn_tokens
    v = llamacpp_vocab(case.llm())
    eot = end_of_turn_tokens(case.tok)
    eot_id = case.tok.convert_tokens_to_ids(eot[0]) if eot else case.tok.eos_token_id
    stops = case.stops
    record(case.name, eos=v['eos'], eot=v['eot'], stop_ids=stops, eog=[i for i in stops if i in v['eog']],
           control=set(stops) <= set(v['control']))
    assert v['eos'] == case.tok.eos_token_id and v['eot'] == eot_id, (v['eos'], v['eot'], case.tok.eos_token_id, eot_id)
    assert {v['eos'], v['eot']} <= set(v['eog']), v['eog']
    assert set(stops) <= set(v['control']), [case.tok.convert_ids_to_tokens(i) for i in stops if i not in v['control']]

@both
def test_logits_and_greedy(case):
    "At f32 llama.cpp's logits on a rendered chat are the transformers model's; greedy continuations agree at f32 and f16."
    from qlora_nb.infer import rel_l2
    ids = case.ids(case.render(CHATS[0]))
    with torch.no_grad(): ref = case.model(torch.tensor([ids])).logits[0]
    d = rel_l2(ref, llamacpp_logits(case.llm('f32'), ids))
    record(case.name, rel_l2=float(f'{d:.1e}'))
    assert d < 1e-2, d
    same = {}
    for t in ('f32', 'f16'):
        for msgs in PROMPTS:
            p = case.ids(case.render(msgs, gen=True))
            with torch.no_grad():
                want = case.model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=12,
                                           min_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(p):].tolist()
            got = llamacpp_greedy(case.llm(t), p, 12)
            same.setdefault(t, []).append(got == want)
    record(case.name, greedy=all(same['f32']) and all(same['f16']), greedy_detail=same)
    assert all(same['f32']), same
    assert all(same['f16']), same

def test_default_stops_in_chat_completion(adapter, root):
    "The trained embedded default: llama.cpp's own chat completion, no stop strings given, ends where `qlora-nb generate` ends, at `<|im_end|>`."
    from qlora_nb.infer import adapter_run, generate, load_for_inference
    r = export_gguf(adapter, root/'stop'/'model.gguf', outtype='f16')
    run = adapter_run(adapter)
    stops = [l.removeprefix('PARAMETER stop ') for l in r['modelfile'].read_text(encoding='utf-8').splitlines() if l.startswith('PARAMETER stop')]
    assert [json.loads(s) for s in stops] == stop_strings(run) == run.tokenizer.convert_ids_to_tokens(run.stop_token_ids)
    model, tok = load_for_inference(adapter)
    llm = load_gguf(r['output'])
    try:
        for msgs in PROMPTS:
            want = generate(model, tok, msgs, max_new_tokens=64)
            c = llm.create_chat_completion(messages=msgs, temperature=0.0, top_k=1, max_tokens=64, seed=0)
            got = c['choices'][0]
            assert got['finish_reason'] == 'stop', got
            assert got['message']['content'] == want, (got['message']['content'], want)
    finally: llm.close()
    record('default', chat_completion_stops=True)

def test_user_defined_pieces_kept_whole(tmp_path):
    """Chat markers that a SentencePiece model holds as user-defined pieces (`user_defined_symbols`, as many real models carry
    them) are typed CONTROL in the GGUF, so llama.cpp keeps them whole as SentencePiece does; typed NORMAL, llama.cpp spelled them out."""
    import io, gguf, sentencepiece as spm
    from transformers import LlamaConfig, LlamaForCausalLM
    from qlora_nb.tiny import CHAT_TEMPLATE, chat_texts, read_sample_chats, tokenizer_from_sentencepiece
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(chat_texts(read_sample_chats())), model_writer=buf, model_type='bpe', vocab_size=1024,
        byte_fallback=True, character_coverage=1.0, normalization_rule_name='identity', add_dummy_prefix=False, remove_extra_whitespaces=False,
        user_defined_symbols=['<|im_start|>', '<|im_end|>'], unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    tok = tokenizer_from_sentencepiece(buf.getvalue(), ['<unk>', '<s>', '</s>'], CHAT_TEMPLATE, eos_token='</s>', bos_token='<s>', pad_token=None)
    d = tmp_path/'model'
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                 vocab_size=len(tok), bos_token_id=1, eos_token_id=2)).save_pretrained(d)
    tok.save_pretrained(d); (d/'tokenizer.model').write_bytes(buf.getvalue())
    f = convert_to_gguf(d, tmp_path/'gguf'/'model.gguf', 'f32')
    types = gguf.GGUFReader(f).fields['tokenizer.ggml.token_type'].contents()
    ids = [sp.piece_to_id(p) for p in ('<|im_start|>', '<|im_end|>')]
    assert [types[i] for i in ids] == [gguf.TokenType.CONTROL] * 2, [types[i] for i in ids]
    text = '<|im_start|>user\nこんにちは<|im_end|>\n'
    llm = load_gguf(f)
    try: assert llamacpp_tokens(llm, text) == sp.encode(text), (llamacpp_tokens(llm, text), sp.encode(text))
    finally: llm.close()

Q8_RUN = '''
import sys
from qlora_nb.export import load_gguf, llamacpp_logits, llamacpp_tokens
llm = load_gguf(sys.argv[1], logits_all=True)
x = llamacpp_logits(llm, llamacpp_tokens(llm, '<|im_start|>user\\n日本の首都は？<|im_end|>\\n<|im_start|>assistant\\n'))
print(bool(x.isfinite().all()))
llm.close()
'''

def test_quantized_files_run_and_perplexity(adapter, root):
    """The default q8_0 and a q4_k_m made by llama.cpp's quantizer (llama-cpp-python's `llama_model_quantize`) run in llama.cpp
    (each in its own process: a native build on an AMX CPU segfaults here); perplexity of held-out chats at f16, q8_0, q4_k_m."""
    from qlora_nb.export import perplexity
    from qlora_nb.tiny import read_sample_chats
    q8 = export_gguf(adapter, root/'q8'/'model.gguf')
    q4 = export_gguf(adapter, root/'q4'/'model.gguf', quantize='q4_k_m')
    assert (q8['outtype'], q4['quantized'], q4['quantize_hint']) == ('q8_0', 'Q4_K_M', None)
    assert sorted(p.name for p in (root/'q4').iterdir()) == ['Modelfile', 'model.gguf']
    for f in (q8['output'], q4['output']):
        p = subprocess.run([sys.executable, '-c', Q8_RUN, str(f)], env=run_env(), capture_output=True, text=True, timeout=300)
        assert p.returncode == 0 and p.stdout.strip().endswith('True'), f"{f}: exit {p.returncode} (-11: segfault)\n{p.stderr[-2000:]}"
    f16 = export_gguf(adapter, root/'f16'/'model.gguf', outtype='f16')['output']
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(adapter)
    held_out = [tok.apply_chat_template(c['messages'], tokenize=False) for c in read_sample_chats()[-8:]]
    ppl = {t: perplexity(f, held_out) for t, f in (('f16', f16), ('q8_0', q8['output']), ('q4_k_m', q4['output']))}
    print('\nperplexity of 8 held-out chats in llama.cpp: ' + ', '.join(f'{t} {v:.3f}' for t, v in ppl.items()))
    record('default', perplexity={t: round(v, 3) for t, v in ppl.items()})
    assert abs(ppl['q8_0'] / ppl['f16'] - 1) < 0.02 and abs(ppl['q4_k_m'] / ppl['f16'] - 1) < 0.25, ppl

def test_adapter_only_export(adapter, root):
    "`export --adapter-only`: the dequantized base and the LoRA as a GGUF adapter beside it, which llama.cpp applies at load time "
    "with the merged export's logits; an adapter llama.cpp's LoRA format cannot hold (DoRA) refused before any work."
    import shutil
    from transformers import AutoTokenizer
    from conftest import refused, run
    from qlora_nb.infer import rel_l2
    out = root/'adapter_only'/'model.gguf'
    p = run('export', '--adapter', adapter, '--output', out, '--outtype', 'f32', '--adapter-only', rc=0)
    assert sorted(x.name for x in out.parent.iterdir()) == ['Modelfile', 'model-lora.gguf', 'model.gguf']
    assert (out.parent/'Modelfile').read_text().startswith('FROM ./model.gguf\nADAPTER ./model-lora.gguf\nPARAMETER stop "<|im_end|>"\n')
    assert 'model-lora.gguf -cnv' in p.stdout and 'LoRA adapter (GGUF)' in p.stdout, p.stdout
    merged = export_gguf(adapter, root/'adapter_only_merged'/'model.gguf', outtype='f32')['output']
    text = AutoTokenizer.from_pretrained(adapter).apply_chat_template(CHATS[0], tokenize=False)
    llms = [load_gguf(out, 512, True, lora=out.parent/'model-lora.gguf'), load_gguf(merged, 512, True), load_gguf(out, 512, True)]
    try:
        ids = llamacpp_tokens(llms[1], text)
        with_lora, merged_logits, base = (llamacpp_logits(l, ids) for l in llms)
    finally:
        for l in llms: l.close()
    d, base_d = rel_l2(merged_logits, with_lora), rel_l2(merged_logits, base)
    assert d < 1e-3 and base_d > 1e-2, (d, base_d)   # the adapter does what merging does; without it, the base differs
    record('default', adapter_only_rel_l2=float(f'{d:.0e}'))
    dora = root/'dora_adapter'
    shutil.copytree(adapter, dora)
    ac = json.loads((dora/'adapter_config.json').read_text()); ac['use_dora'] = True
    (dora/'adapter_config.json').write_text(json.dumps(ac))
    refused(run('export', '--adapter', dora, '--output', root/'dora'/'model.gguf', '--adapter-only'), 'DoRA', 'without --adapter-only',
            unwritten=[root/'dora'])
