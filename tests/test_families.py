"""The family matrix: every replica of `qlora_nb.families` masked, trained, stopped, merged, loaded with plain peft and exported to GGUF
(read back with transformers' GGUF loader, or the reason it cannot be).

Writes what it saw to nbs/family_matrix.json (when every family ran), which `tools/support_table.py` renders into the README."""
import json, os, re
from pathlib import Path

import pytest, torch
from conftest import REPO, run, sets

from qlora_nb.families import COLUMNS, FAMILIES, replica_dir, replica_overrides, vocab_missing

pytestmark = pytest.mark.slow   # long end-to-end runs: CI runs them; `pytest -m "not slow"` skips them locally

RESULTS, TRAINED = {}, {}
MISSING = {f: why for f in FAMILIES if (why := vocab_missing(f))}   # llm_jp3 where its real vocabulary's file is not found
FAMS = [pytest.param(f, marks=pytest.mark.skip(reason=MISSING[f])) if f in MISSING else f for f in FAMILIES]
CHAT = [{'role': 'system', 'content': 'あなたは簡潔に答えるアシスタントです。'},
        {'role': 'user', 'content': 'フランスの首都はどこですか？'}, {'role': 'assistant', 'content': 'フランスの首都はパリです。'},
        {'role': 'user', 'content': 'What is 3 + 4?'}, {'role': 'assistant', 'content': 'It is 7.'}]
SETS = ['training.max_steps=8', 'training.learning_rate=2e-2', 'training.logging_steps=1', 'training.save_steps=100',
        'training.disable_tqdm=true', 'data.max_length=128', 'training.gradient_checkpointing=false',
        'data.max_tokens_per_batch=null', 'training.per_device_train_batch_size=4', 'training.warmup_steps=0',
        'training.gradient_accumulation_steps=1']   # 8 steps of 4 rows: the default's 8 micro-batches a step cost 4× the time and test nothing more

# gpt-oss's template writes its system preamble (identity, knowledge cutoff, date, reasoning effort, channels) before every chat:
# 156 tokens of the replica's 1,024-token vocabulary (far fewer of the real o200k_harmony's), so 128 would cut every row before its reply
LONGER = {'gpt_oss': ['data.max_length=256']}

def record(family, **kw): RESULTS.setdefault(family, {}).update(kw)

def trc(family): return dict(trust_remote_code=True) if FAMILIES[family].code else {}   # its code ships in its folder (`remote`)

def trained(family, root):
    "Train the family's replica in-process once per session: (adapter folder, summary)."
    if family not in TRAINED:
        import matplotlib; matplotlib.use('Agg')
        from qlora_nb.config import load_config
        from qlora_nb.train import train
        d = root/family
        cfg = load_config(overrides=[*replica_overrides(family), f'result_path={d}/run', f'save_path={d}/adapter', *SETS, *LONGER.get(family, [])])
        s = train(cfg, overwrite=True)
        s.pop('trainer')
        TRAINED[family] = Path(s['save_path']), s
    return TRAINED[family]

@pytest.fixture(scope='module')
def root(tmp_path_factory): return tmp_path_factory.mktemp('families')

@pytest.fixture(scope='module', autouse=True)
def write_results():
    yield
    if set(RESULTS) | set(MISSING) == set(FAMILIES) and all(set(COLUMNS) <= set(r) for r in RESULTS.values()):
        RESULTS.update({f: {'skipped': why} for f, why in MISSING.items()})   # the support table says why
        p = REPO/'nbs'/'family_matrix.json'
        before = json.loads(p.read_text(encoding='utf-8')) if p.exists() else {}
        for f, r in before.get('families', {}).items():   # tests/test_llamacpp.py's column and its figures stay
            RESULTS.setdefault(f, {}).update({k: v for k, v in r.items() if k.startswith('llama.cpp')})
        out = {'note': 'written by tests/test_families.py (llama.cpp: tests/test_llamacpp.py); rendered by tools/support_table.py',
               'families': RESULTS, **({'default': before['default']} if 'default' in before else {})}
        tmp = p.with_suffix(f'.{os.getpid()}.tmp'); tmp.write_text(json.dumps(out, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
        os.replace(tmp, p)   # whole, under pytest-xdist's other process

def runs(labels):
    "The trained tokens as runs of consecutive positions."
    out, cur = [], []
    for i, l in enumerate(labels):
        if l != -100: cur.append(i)
        elif cur: out.append(cur); cur = []
    return out + ([cur] if cur else [])

@pytest.mark.parametrize('family', FAMS)
def test_masking(family):
    from transformers import AutoTokenizer
    from qlora_nb.template import tokenize_conversation, untrained_end_of_turn
    from qlora_nb.run import set_pad_token
    tok = set_pad_token(AutoTokenizer.from_pretrained(replica_dir(family), **trc(family)))
    r = tokenize_conversation(CHAT, tok, None)
    pieces = [tok.decode([r['input_ids'][i] for i in run]) for run in runs(r['labels'])]
    trained_text = ''.join(pieces)
    for m in CHAT:
        if m['role'] == 'assistant': assert m['content'] in trained_text, pieces
        else: assert m['content'] not in trained_text and m['content'][-4:] not in trained_text, pieces
    assert untrained_end_of_turn(tok) == [], pieces
    # nothing else: each trained run is one reply and special tokens (Qwen3's template also writes an empty think block)
    replies = [m['content'] for m in CHAT if m['role'] == 'assistant']
    assert len(pieces) == len(replies), pieces
    for piece, reply in zip(pieces, replies):
        # Qwen3's empty think block; gpt-oss's harmony header of the final channel, which the model writes after the prompt's `<|start|>assistant`
        rest = re.sub(r'<think>\s*</think>|<\|channel\|>final<\|message\|>', '', piece.replace(reply, '', 1))
        for t in sorted(tok.get_added_vocab(), key=len, reverse=True): rest = rest.replace(t, '')
        assert not rest.strip(), (piece, reply)
    assert tok.pad_token_id not in [t for t, l in zip(r['input_ids'], r['labels']) if l != -100]
    record(family, masking=True)

LLMJP_TEXTS = ['フランスの首都はパリです。', 'ありがとう！', 'The capital of France is Paris.', ' leading space', 'x  Paris', 'runs    of  spaces  ',
               '😀🇫🇷 emoji 🗼 🦙', 'ＡＢＣ１２３　全角の文字と　スペース。ｶﾀｶﾅ', 'def add(a, b):\n    return a + b  # 3\n', '\n\nnew\nlines\n',
               '\t tab\r\n', '<PAD> <0x41> ▁ <s', '𠮷野家 ㈱ ① ™ ß ﬁ', '12345678901234', '']

@pytest.mark.skipif('llm_jp3' in MISSING, reason=MISSING.get('llm_jp3', ''))
def test_llmjp_tokenizer_is_sentencepiece():
    """llm-jp-3's replica tokenizer (a `tokenizers` Unigram, as saved and reloaded) gives SentencePiece's own ids on every kind of text, and
    decodes them as it does (text holding a special token's own string aside: transformers reads `<s>` as BOS, as every fast tokenizer does)."""
    import random, sentencepiece as spm
    from transformers import AutoConfig, AutoTokenizer
    from qlora_nb.families import llmjp_tokenizer_file
    from qlora_nb.tiny import read_sample_chats
    sp = spm.SentencePieceProcessor(model_file=str(llmjp_tokenizer_file()))
    tok = AutoTokenizer.from_pretrained(replica_dir('llm_jp3'))
    rnd = random.Random(0)
    chars = [chr(c) for c in [*range(32, 127), *range(0x3040, 0x3100), *range(0x4e00, 0x4e40), 0x3000, 0xff01, 0xff21, 0x1f600, 0x1f1eb, 0x2581, 10, 9, 32, 32]]
    texts = [*LLMJP_TEXTS, *(m['content'] or '' for c in read_sample_chats() for m in c['messages']),
             *(''.join(rnd.choice(chars) for _ in range(rnd.randint(1, 30))) for _ in range(1000))]
    bad = [t for t in texts if tok(t, add_special_tokens=False)['input_ids'] != sp.encode(t)]
    assert not bad, [(t, sp.encode(t, out_type=str), tok.tokenize(t)) for t in bad[:3]]
    assert [tok.decode(sp.encode(t)) for t in texts] == [sp.decode(sp.encode(t)) for t in texts]   # the text, but a `▁` written as a space
    assert (len(tok), AutoConfig.from_pretrained(replica_dir('llm_jp3')).vocab_size, tok('a')['input_ids'][0]) == (99574, 99584, tok.bos_token_id)

@pytest.mark.parametrize('family', FAMS)
def test_train_and_adapter(family, root):
    from safetensors import safe_open
    adapter, s = trained(family, root)
    assert s['loss_last'] < s['loss_first'], s
    with safe_open(adapter/'adapter_model.safetensors', 'pt') as f: keys = list(f.keys())
    assert keys and all('lora_' in k for k in keys), [k for k in keys if 'lora_' not in k]
    targets = json.loads((adapter/'adapter_config.json').read_text())['target_modules']
    assert not any('expert' in t for t in targets) and not json.loads((adapter/'adapter_config.json').read_text()).get('target_parameters')
    record(family, train=True, loss=[round(s['loss_first'], 1), round(s['loss_last'], 1)], targets=sorted(targets))

class ForceThen:
    "A logits processor: token `fill` at every step except step `at`, where it forces `stop`."
    def __init__(self, n0, fill, stop, at=2): self.n0, self.fill, self.stop, self.at = n0, fill, stop, at
    def __call__(self, input_ids, scores):
        want = self.stop if input_ids.shape[1] - self.n0 == self.at else self.fill
        out = torch.full_like(scores, -float('inf')); out[:, want] = 0
        return out

@pytest.mark.parametrize('family', FAMS)
def test_stop_and_merge(family, root, tmp_path):
    from transformers import AutoModelForCausalLM, LogitsProcessorList
    from qlora_nb.template import fold_system, stop_token_ids
    from qlora_nb.infer import generate, load_for_inference, merge_adapter, rel_l2
    adapter, _ = trained(family, root)
    model, tok = load_for_inference(adapter)
    msgs = CHAT[:2]
    n0 = len(tok.apply_chat_template(fold_system(msgs, tok), add_generation_prompt=True, return_dict=True)['input_ids'])
    fill = tok.convert_tokens_to_ids(tok.tokenize('a')[-1])
    stops = stop_token_ids(tok, model.generation_config)
    want = {tok.convert_tokens_to_ids(t) for t in FAMILIES[family].stop}
    assert want <= set(stops), (stops, want)
    for s in stops:
        reply = generate(model, tok, msgs, max_new_tokens=8, logits_processor=LogitsProcessorList([ForceThen(n0, fill, s)]))
        assert reply == tok.decode([fill, fill], skip_special_tokens=True), (tok.convert_ids_to_tokens(s), reply)
    record(family, stop=True, stops=tok.convert_ids_to_tokens(stops))
    # merge: the merged model computes what the 4-bit base + adapter computes
    out = merge_adapter(adapter, tmp_path/'merged', dtype='float32')
    merged = AutoModelForCausalLM.from_pretrained(out, **trc(family))
    batch = tok.apply_chat_template(CHAT[1:], return_tensors='pt', return_dict=True)
    with torch.no_grad():
        ref, got = model(**batch).logits[0], merged(**batch).logits[0]
        with model.disable_adapter(): base = model(**batch).logits[0]
    d, d_adapter = rel_l2(ref, got), rel_l2(ref, base)
    record(family, merge=bool(d < 5e-2 and d_adapter > 1e-3), merge_rel_l2=float(f'{d:.0e}'), adapter_rel_l2=round(d_adapter, 1))
    assert d < 5e-2 and d_adapter > 1e-3, (d, d_adapter)
    if merged.config.tie_word_embeddings or FAMILIES[family].config.get('tie_word_embeddings'):
        emb, head = merged.get_input_embeddings().weight, merged.get_output_embeddings().weight
        orig = AutoModelForCausalLM.from_pretrained(replica_dir(family), dtype=torch.float32, **trc(family)).get_input_embeddings().weight
        assert emb.data_ptr() == head.data_ptr() and torch.equal(emb[:orig.shape[0]], orig)
    record(family, tied=bool(merged.config.tie_word_embeddings))

@pytest.mark.parametrize('family', FAMS)
def test_dequantized_base(family):
    "The plain float32 model the merge starts from computes what the 4-bit base computes (Conv1D layouts, square ones too)."
    from qlora_nb.config import load_config
    from qlora_nb.infer import dequantized_base, rel_l2
    from transformers import AutoModelForCausalLM
    from qlora_nb.model import load_base_model, quantized_bytes
    from qlora_nb.run import expert_tensors, nf4_bits, resolve_run
    run = resolve_run(load_config(overrides=[*replica_overrides(family), 'quantization.bnb_4bit_compute_dtype=float32']), for_training=False)
    batch = run.tokenizer.apply_chat_template(CHAT[1:], return_tensors='pt', return_dict=True)
    base = load_base_model(run).eval()
    with torch.no_grad(): d = rel_l2(base(**batch).logits[0], dequantized_base(run)(**batch).logits[0])
    # 4-bit kernels vs float32 matmuls on the same dequantized weights: a few 1e-3 (about 3e-3 a layer); Gemma 4 norms each layer's
    # attention, MLP and per-layer-input branches back to full size, so the rounding of each reaches the logits undamped: 1.1e-2 over its 4 layers
    assert d < (2e-2 if family == 'gemma4' else 1e-2), d
    q, n = quantized_bytes(base), sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(replica_dir(family), **trc(family)).parameters())
    four = sum(v['params'] for v in q.values())
    bits = {k: v['bytes'] * 8 / v['params'] for k, v in q.items()}
    total = sum(v['bytes'] for v in q.values()) + sum(p.numel() * p.element_size() for name, p in base.named_parameters()
                                                      if p.dtype != torch.uint8)   # the rest, as loaded
    record(family, **{'4-bit base': f"{total / 2**20:.2f} MiB: {four:,} of {n:,} parameters in 4-bit"
                                    + ''.join(f"; {k} {b:.2f} bits each" for k, b in bits.items())})
    if run.expert_tensors:   # every expert weight stored NF4, within 5% of the theory (per-tensor lookup tables included)
        assert q['experts']['params'] == run.expert_params and expert_tensors(base) == []   # none left 3-D (a Mamba mixer's conv1d kernel is 3-D, not an expert)
        assert abs(bits['experts'] / nf4_bits() - 1) < 0.05, (bits, nf4_bits())

def export_reason(family:str, e:str, gguf_arch:str, reader:bool)->str:
    "The support table's short reason for a family the converter refuses."
    if 'unigram' in e: why = "refused: a SentencePiece unigram model, which llama.cpp would cut into other tokens than the tokenizer does; `qlora-nb merge` instead"
    elif 'has no converter for the' in e: why = f"refused: llama.cpp's converter has no {e.split('for the ', 1)[1].split()[0]} architecture"   # a model's own code (`remote`)
    elif 'fails to load' in e: why = 'refused: ' + e.split(': ', 1)[-1].split(', so it')[0]   # the converter's module, not the model (DeepSeek-V3)
    elif 'BPE pre-tokenizer' not in e: why = e.split(': ', 1)[-1][:100]
    elif FAMILIES[family].kind == 'byte_bpe': why = "refused: a byte-level BPE replica has no pre-tokenizer hash llama.cpp's converter lists"
    else: why = f"refused: llama.cpp's {gguf_arch} converter takes only byte-level BPE, known by hash"
    return why + ('' if reader or gguf_arch is None else f"; transformers cannot read {gguf_arch} back")

# families the converter takes whose GGUF transformers' reader cannot build back, and why (llama.cpp's column checks the file)
UNREAD = {'gemma4': "transformers' GGUF reader maps no per-layer sizes of Gemma 4 (per-layer feed-forward widths, per-layer embeddings, "
                    "layers that reuse keys and values), so it cannot build the model back"}

@pytest.mark.parametrize('family', FAMS)
def test_export(family, root, tmp_path):
    "The trained adapter exported to GGUF and read back with transformers' GGUF loader, or the reason it cannot be."
    from transformers import AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    from qlora_nb.config import ConfigError
    from qlora_nb.template import fold_system
    from qlora_nb.export import _gguf_arch, check_convertible, export_gguf, families_table, model_config
    from qlora_nb.infer import merge_adapter
    from test_export import assert_round_trip
    adapter, _ = trained(family, root)
    base, tok = replica_dir(family), AutoTokenizer.from_pretrained(adapter)
    g = _gguf_arch(model_config(base)['architectures'][0])
    reader = g in GGUF_SUPPORTED_ARCHITECTURES
    # 07b_export's families table says the same of the families it lists
    row = {r['family']: r for r in families_table()}.get({'llama': 'llama3'}.get(family, family))
    try: check_convertible(base, tok, (adapter, base))
    except ConfigError as e:
        assert not FAMILIES[family].code or 'has no converter for the RemoteDecoderForCausalLM architecture' in str(e), e   # its own architecture
        assert (FAMILIES[family].kind == 'byte_bpe' and not FAMILIES[family].vocab) or family == 'gpt_neox' or (   # GPT-NeoX: the converter reads any tokenizer as BPE
            FAMILIES[family].kind == 'sentencepiece_unigram' and 'unigram' in str(e)), e   # llm-jp-3: refused as a unigram model, `_unigram_reason`
        assert row is None or not row['round_trip_in_tests'], row
        return record(family, export=export_reason(family, str(e), g, reader))
    assert FAMILIES[family].kind == 'sentencepiece' or FAMILIES[family].vocab, family   # a trained byte-level BPE is refused
    if not reader: return record(family, export=f"converts; transformers' GGUF reader has no {g} architecture to check it")
    if family in UNREAD:   # it converts (llama.cpp's column checks the file), but transformers' GGUF reader cannot build the model back
        assert export_gguf(adapter, tmp_path/'gguf'/'model.gguf', outtype='f32')['output'].is_file()
        return record(family, export=f'converts; {UNREAD[family]}')
    assert row is None or row['round_trip_in_tests'], row
    outtype = 'q8_0' if family == 'mistral' else 'f32'
    # named model.gguf: transformers' GGUF reader takes a llama-architecture file whose general.name (the file's stem) contains
    # "mistral" for a Mistral model, then has no tensor map for it
    r = export_gguf(adapter, tmp_path/'gguf'/'model.gguf', outtype=outtype)
    merged = merge_adapter(adapter, tmp_path/'merged', dtype='float32')
    try: x = assert_round_trip(merged, r['output'], fold_system(CHAT, tok))
    except AssertionError: record(family, export=False); raise
    record(family, export=True, export_outtype=outtype, export_rel_l2=float(f"{x['rel_l2']:.0e}"))

PLAIN = '''
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
out = {}
for family, base, adapter, trc in json.loads(sys.argv[1]):
    m = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=trc)   # the unmodified base, as the hub would give it
    tok = AutoTokenizer.from_pretrained(adapter)
    ids = torch.tensor([tok('hello こんにちは', add_special_tokens=False)['input_ids']])
    before = m(ids).logits
    p = PeftModel.from_pretrained(m, adapter)
    after = p(ids).logits
    out[family] = bool(torch.isfinite(after).all()) and not torch.equal(before, after)
print(json.dumps(out))
'''

def test_plain_peft(root):
    "Every adapter loads with plain peft on its unmodified base, in a process that never imports qlora_nb."
    jobs = [(f, str(replica_dir(f)), str(trained(f, root)[0]), bool(FAMILIES[f].code)) for f in FAMILIES if f not in MISSING]
    p = run(json.dumps(jobs), code=PLAIN, env={'PYTHONPATH': ''}, cwd=root, rc=0)   # not this checkout's qlora_nb on the path
    ok = json.loads(p.stdout.strip().splitlines()[-1])
    for f, v in ok.items(): record(f, **{'plain peft': v})
    assert all(ok.values()), ok

def test_cli_train_and_inspect(tmp_path):
    "One family through the command line: `inspect` says what it decided, `train` says the system turn is folded."
    args = sets(f'model_name={replica_dir("gemma2")}', f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter', *SETS)
    i = run('inspect', *args, rc=0)
    assert "pad '<pad>'" in i.stdout and "'<end_of_turn>'" in i.stdout and 'folded into the first user turn' in i.stdout, i.stdout
    assert 'LoRA adapters on: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj.' in i.stdout
    t = run('train', *args, rc=0)
    assert t.stdout.count('folded into the first user turn') == 1 and (tmp_path/'adapter'/'adapter_model.safetensors').exists()

def test_moe_experts_when_asked():
    "Mixtral's experts get adapters only when asked, and then only with dropout 0, which the refusal names."
    from qlora_nb.config import ConfigError, load_config
    from qlora_nb.model import lora_config
    from qlora_nb.run import resolve_run
    base = [f'model_name={replica_dir("mixtral")}', 'lora.target_parameters=[mlp.experts.gate_up_proj,mlp.experts.down_proj]']
    assert resolve_run(load_config(overrides=base[:1]), for_training=False).lora_parameters is None
    with pytest.raises(ConfigError, match='lora.lora_dropout=0'): lora_config(resolve_run(load_config(overrides=base), for_training=False))
    with pytest.raises(ConfigError, match="no weight tensor named 'mlp.experts.w1'; its experts' fused tensors are mlp.experts.down_proj, mlp.experts.gate_up_proj"):
        resolve_run(load_config(overrides=[base[0], 'lora.target_parameters=[mlp.experts.w1]', 'lora.lora_dropout=0']), for_training=False)

def test_moe_experts_4bit(tmp_path):
    "Adapters on Mixtral's 4-bit experts: both fused tensors of a layer train, `inspect` says what the experts take, and the "
    "adapter computes the same on its 4-bit base, merged into the dequantized base, and loaded by plain peft on the original base."
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    from qlora_nb.config import load_config
    from qlora_nb.infer import dequantized_base, load_for_inference, rel_l2
    from qlora_nb.run import adapter_run, resolve_run, run_report
    from qlora_nb.train import train
    base = [f'model_name={replica_dir("mixtral")}', f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter', *SETS, 'lora.lora_dropout=0',
            'training.max_steps=4', 'lora.target_modules=[q_proj]', 'lora.target_parameters=[mlp.experts.gate_up_proj,mlp.experts.down_proj]']
    report = run_report(resolve_run(load_config(overrides=base)))
    assert 'Experts: 4 fused weight tensors in 2 layers, 196,608 parameters, stored NF4 after loading: 0.10 MiB (in bfloat16: 0.38 MiB).' in report
    off = run_report(resolve_run(load_config(overrides=[*base, 'quantization.quantize_experts=false'])))
    assert 'kept in bfloat16 as quantization.quantize_experts is false: 0.38 MiB (NF4 would take 0.10 MiB).' in off
    s = train(load_config(overrides=base), overwrite=True)
    w = load_file(Path(s['save_path'])/'adapter_model.safetensors')
    for name in ('gate_up_proj', 'down_proj'):   # peft nests one wrapper per tensor: the inner one (down_proj) trains too
        b = [v for k, v in w.items() if 'experts' in k and 'lora_B' in k and (('base_layer' in k) == (name == 'down_proj'))]
        assert len(b) == 2 and all(v.abs().sum() > 0 for v in b), (name, list(w))
    run = adapter_run(s['save_path'])
    assert run.quantize_experts and run.lora_parameters == [f'model.layers.{i}.mlp.experts.{p}' for i in range(2) for p in ('down_proj', 'gate_up_proj')]
    batch = run.tokenizer.apply_chat_template(CHAT[1:3], return_tensors='pt', return_dict=True)
    m, _ = load_for_inference(s['save_path'], run)
    with torch.no_grad():
        four = m(**batch).logits[0].float()
        m.disable_adapter_layers(); without = m(**batch).logits[0].float(); m.enable_adapter_layers()
        again = m(**batch).logits[0].float()   # a second forward: the adapter's parametrization was removed, not stacked
        merged = PeftModel.from_pretrained(dequantized_base(run), s['save_path']).merge_and_unload()(**batch).logits[0]
        p = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(replica_dir('mixtral'), dtype=torch.float32), s['save_path'])
        plain = p(**batch).logits[0]
        with p.disable_adapter(): plain_without = p(**batch).logits[0]
    assert rel_l2(without, four) > 1e-2, 'the adapter changes nothing'
    assert torch.equal(four, again)
    assert rel_l2(four, merged) < 2e-2, rel_l2(four, merged)   # the same weights, dequantized: 4-bit kernels against float32 matmuls
    cos = torch.nn.functional.cosine_similarity((four - without).flatten(), (plain - plain_without).flatten(), dim=0)
    assert cos > 0.9, cos   # on the original (unquantized) base, plain peft's adapter does what it did on the 4-bit one

def test_nemotron_h_mamba(root, tmp_path):
    "Nemotron-H's Mamba-2 mixers: `in_proj` / `out_proj` in 4-bit, `in_proj` with LoRA under all-linear (peft refuses `out_proj`, "
    "refused here before loading when named); `conv1d`, `A_log`, `D`, `dt_bias` neither quantized nor trained; the torch Mamba path "
    "trains with gradient checkpointing on as it does off."
    from bitsandbytes.nn import Linear4bit
    from safetensors import safe_open
    from qlora_nb.config import ConfigError, load_config
    from qlora_nb.model import load_base_model
    from qlora_nb.run import resolve_run
    from qlora_nb.train import train
    base = [f'model_name={replica_dir("nemotron_h")}']
    run = resolve_run(load_config(overrides=base), for_training=False)
    assert run.lora_targets == ['down_proj', 'in_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'] and run.expert_tensors == []
    with pytest.raises(ConfigError, match="peft refuses LoRA on 'out_proj'"):
        resolve_run(load_config(overrides=[*base, 'lora.target_modules=[in_proj,out_proj]']), for_training=False)
    m = load_base_model(run)
    mixer = m.model.layers[0].mixer
    assert isinstance(mixer.in_proj, Linear4bit) and isinstance(mixer.out_proj, Linear4bit) and type(mixer.conv1d) is torch.nn.Conv1d
    assert all(p.dtype == torch.bfloat16 for p in (mixer.conv1d.weight, mixer.conv1d.bias, mixer.A_log, mixer.D, mixer.dt_bias))
    adapter, s = trained('nemotron_h', root)   # gradient checkpointing off
    with safe_open(adapter/'adapter_model.safetensors', 'pt') as f: keys = list(f.keys())
    assert any('mixer.in_proj.lora_A' in k for k in keys) and not any(w in k for k in keys for w in ('out_proj', 'conv1d', 'A_log', '.D', 'dt_bias'))
    on = train(load_config(overrides=[*base, f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter', *SETS,
                                      'training.gradient_checkpointing=true']), overwrite=True)
    assert on['trainer'].args.gradient_checkpointing and on['loss_last'] < on['loss_first']
    assert abs(on['loss_first'] - s['loss_first']) < 1e-3, (on['loss_first'], s['loss_first'])   # the same first step, recomputed
    trainable = {n for n, p in on['trainer'].model.named_parameters() if p.requires_grad}
    assert trainable and all('lora_' in n for n in trainable), sorted(trainable)[:5]

def test_granitemoehybrid_mamba(root):
    "Granite 4.0-H: the Mamba-2 mixers' `in_proj` / `out_proj` in 4-bit, both with LoRA under all-linear (peft 0.21 refuses `out_proj` "
    "only on the Mamba model types it lists, not this one, and the PyTorch mixer calls the layer: its adapter changes the output); "
    "`conv1d`, `A_log`, `D`, `dt_bias` kept and untrained; the experts NF4, the router kept, the shared MLP with LoRA; the multipliers "
    "in the config; `in_proj`'s 296 rows kept out of bitsandbytes' CPU repacking; the converter reads the layer types by the hub's names."
    from bitsandbytes.nn import Linear4bit
    from safetensors import safe_open
    from qlora_nb.config import load_config
    from qlora_nb.export import model_config
    from qlora_nb.infer import load_for_inference, rel_l2
    from qlora_nb.model import load_base_model
    from qlora_nb.run import lora_refused, resolve_run
    run = resolve_run(load_config(overrides=replica_overrides('granitemoehybrid')), for_training=False)
    assert run.lora_targets == ['in_proj', 'input_linear', 'k_proj', 'o_proj', 'out_proj', 'output_linear', 'q_proj', 'v_proj'], run.lora_targets
    assert lora_refused('granitemoehybrid', run.linear_names) == [] and lora_refused('nemotron_h', run.linear_names) == ['out_proj']
    assert run.expert_tensors == [f'model.layers.{i}.block_sparse_moe.experts.{p}' for i in range(2) for p in ('gate_up_proj', 'down_proj')]
    m = load_base_model(run)
    c = m.config
    assert (c.embedding_multiplier, c.residual_multiplier, c.attention_multiplier, c.logits_scaling) == (12.0, 0.22, 0.0078125, 6.0)
    mixer, moe = m.model.layers[0].mamba, m.model.layers[0].block_sparse_moe
    assert isinstance(mixer.in_proj, Linear4bit) and isinstance(mixer.out_proj, Linear4bit) and type(mixer.conv1d) is torch.nn.Conv1d
    assert all(p.dtype == torch.bfloat16 for p in (mixer.conv1d.weight, mixer.A_log, mixer.D, mixer.dt_bias, moe.router.weight))
    assert mixer.in_proj.out_features == 296 and not mixer.in_proj.support_avx512bf16_for_cpu   # 2 × 128 + 2 × 16 + 8 rows
    assert mixer.out_proj.support_avx512bf16_for_cpu == Linear4bit(2, 2).support_avx512bf16_for_cpu   # 64 rows: repacked where the CPU can
    assert model_config(replica_dir('granitemoehybrid'))['layer_types'] == ['mamba', 'attention']   # transformers 5 saved linear_attention, full_attention
    adapter, _ = trained('granitemoehybrid', root)
    with safe_open(adapter/'adapter_model.safetensors', 'pt') as f: keys = list(f.keys())
    for name in ('mamba.in_proj', 'mamba.out_proj', 'shared_mlp.input_linear', 'shared_mlp.output_linear', 'self_attn.q_proj'):
        assert any(f'{name}.lora_B' in k for k in keys), (name, keys)
    assert not any(w in k for k in keys for w in ('conv1d', 'A_log', '.D.', 'dt_bias', 'router', 'experts')), keys
    model, tok = load_for_inference(adapter)
    batch = tok.apply_chat_template(CHAT[1:3], return_tensors='pt', return_dict=True)
    with torch.no_grad():
        with_out = model(**batch).logits[0]
        outs = [mod for n, mod in model.named_modules() if n.endswith('mamba.out_proj')]
        assert len(outs) == 1
        outs[0].lora_B['default'].weight.zero_()   # out_proj's adapter off, the others on
        without_out = model(**batch).logits[0]
    assert rel_l2(with_out, without_out) > 1e-3, rel_l2(with_out, without_out)   # out_proj's adapter runs in the PyTorch mixer

def test_gemma4_text(root, tmp_path):
    "Gemma 4's text model: the per-layer-embedding projection and each layer's gate and projection in 4-bit with LoRA under all-linear, "
    "the per-layer embedding table kept as it is; the layers that reuse earlier keys and values have no `k_proj` / `v_proj`; training "
    "with gradient checkpointing on as off; `--adapter-only` export refused (llama.cpp applies no LoRA to the per-layer-input layers); "
    "generation with the cache, past the sliding window, computes what the whole sequence computes."
    from bitsandbytes.nn import Linear4bit
    from safetensors import safe_open
    from qlora_nb.config import ConfigError, load_config
    from qlora_nb.export import check_lora_convertible
    from qlora_nb.infer import load_for_inference, rel_l2
    from qlora_nb.model import load_base_model
    from qlora_nb.run import resolve_run
    from qlora_nb.train import train
    base = [f'model_name={replica_dir("gemma4")}']
    run = resolve_run(load_config(overrides=base), for_training=False)
    assert run.lora_targets == ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'per_layer_input_gate', 'per_layer_model_projection',
                                'per_layer_projection', 'q_proj', 'up_proj', 'v_proj'] and run.expert_tensors == []
    m = load_base_model(run)
    layers = m.model.layers
    assert all(isinstance(x, Linear4bit) for x in (m.model.per_layer_model_projection, *(l.per_layer_input_gate for l in layers),
                                                   *(l.per_layer_projection for l in layers)))
    assert type(m.model.embed_tokens_per_layer) is not Linear4bit and m.model.embed_tokens_per_layer.weight.dtype == torch.bfloat16
    assert [hasattr(l.self_attn, 'k_proj') for l in layers] == [True, True, False, False]   # num_kv_shared_layers=2
    adapter, s = trained('gemma4', root)   # gradient checkpointing off
    with safe_open(adapter/'adapter_model.safetensors', 'pt') as f: keys = list(f.keys())
    for name in ('per_layer_model_projection', 'layers.0.per_layer_input_gate', 'layers.3.per_layer_projection', 'layers.1.self_attn.k_proj'):
        assert any(f'{name}.lora_A' in k for k in keys), (name, keys[:8])
    on = train(load_config(overrides=[*base, f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter', *SETS,
                                      'training.gradient_checkpointing=true']), overwrite=True)
    assert on['trainer'].args.gradient_checkpointing and on['loss_last'] < on['loss_first']
    assert abs(on['loss_first'] - s['loss_first']) < 1e-3, (on['loss_first'], s['loss_first'])   # the same first step, recomputed
    with pytest.raises(ConfigError, match=r"it adapts per_layer_input_gate, per_layer_model_projection, per_layer_projection \(Gemma 4's per-layer input\)"):
        check_lora_convertible(adapter)   # --adapter-only: llama.cpp would compute those layers without it (the merged export is right)
    model, tok = load_for_inference(adapter)
    msgs = [{'role': 'user', 'content': ' '.join(m['content'] for m in CHAT * 3)}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors='pt', return_dict=True)
    n0 = enc['input_ids'].shape[1]
    assert n0 > model.config.sliding_window, n0
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, min_new_tokens=8, do_sample=False, return_dict_in_generate=True, output_logits=True)
        full = model(input_ids=out.sequences, use_cache=False).logits[0, n0 - 1:-1].float()
    step = torch.cat(out.logits).float()
    assert step.shape == full.shape and rel_l2(step, full) < 2e-2, rel_l2(step, full)
