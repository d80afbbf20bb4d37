"`qlora-nb export`: GGUF read back with transformers' own GGUF loader, the Modelfile, atomic output, refusals before merge work, llama-quantize."
import json, os, shutil, stat, sys, time
from pathlib import Path
import pytest, torch
from conftest import refused, run, train_adapter

SETS = ['training.max_steps=12', 'training.learning_rate=5e-3', 'training.save_steps=100', 'training.per_device_train_batch_size=4',
        'data.max_length=96', 'training.disable_tqdm=true']

# A Japanese + English chat: kana, kanji the tiny vocabulary spells in bytes (東), an emoji, English words.
CHAT = [{'role': 'system', 'content': 'Answer briefly.'},
        {'role': 'user', 'content': '日本の首都はどこですか？ And the capital of France?'},
        {'role': 'assistant', 'content': '東京です。The capital of France is Paris. 🗼'}]

def assert_round_trip(model_dir, gguf_file, messages=CHAT, tol=5e-2)->dict:
    """The export check any model family can use: `gguf_file` read back with transformers' GGUF loader gives logits within `tol`
    (relative L2) of `model_dir`, the same token ids for the rendered chat, and a chat template that renders the same text."""
    from qlora_nb.export import gguf_roundtrip
    r = gguf_roundtrip(model_dir, gguf_file, messages)
    assert r['template'] and r['same_text'], r
    assert r['same_ids'], r
    assert r['rel_l2'] < tol, r
    return r

@pytest.fixture(scope='module')
def adapter(trained_adapter):
    return trained_adapter   # the session's 12-step adapter (conftest's ADAPTER_SETS, the same as SETS), shared with test_infer

@pytest.fixture(scope='module')
def merged(adapter, tmp_path_factory):
    "The reference: the adapter merged into its dequantized NF4 base, in float32."
    from qlora_nb.infer import merge_adapter
    return merge_adapter(adapter, tmp_path_factory.mktemp('ref')/'merged', dtype='float32')

def test_cli_export_reads_back(adapter, merged, tmp_path):
    out = tmp_path/'gguf'/'model.gguf'
    p = run('export', '--adapter', adapter, '--output', out, rc=0)
    assert sorted(x.name for x in out.parent.iterdir()) == ['Modelfile', 'model.gguf']       # nothing else left behind
    assert 'GGUF (q8_0' in p.stdout and 'ollama create model -f' in p.stdout and f'llama-cli -m {out}' in p.stdout, p.stdout
    assert (out.parent/'Modelfile').read_text() == 'FROM ./model.gguf\nPARAMETER stop "<|im_end|>"\n'
    r = assert_round_trip(merged, out)
    print(f"\nexport q8_0: logits rel L2 {r['rel_l2']:.4f}, {out.stat().st_size/1e6:.2f} MB")

@pytest.mark.parametrize('outtype', ['f32', 'f16'])
def test_outtypes_read_back(adapter, merged, tmp_path, outtype):
    import gguf
    from qlora_nb.export import export_gguf
    r = export_gguf(adapter, tmp_path/'model.gguf', outtype=outtype, system='あなたは丁寧なアシスタントです。')
    x = assert_round_trip(merged, r['output'])
    print(f"\nexport {outtype}: logits rel L2 {x['rel_l2']:.2e}, {r['size']/1e6:.2f} MB")
    if outtype == 'f32': assert x['rel_l2'] < 1e-5
    f = gguf.GGUFReader(r['output']).fields
    assert f['tokenizer.ggml.eos_token_id'].contents() == f['tokenizer.ggml.eot_token_id'].contents() == 2
    assert f['tokenizer.ggml.add_bos_token'].contents() is False and 'generation' not in f['tokenizer.chat_template'].contents().replace('add_generation', '')
    assert r['modelfile'].read_text().endswith('SYSTEM """あなたは丁寧なアシスタントです。"""\n')

def test_a_failed_conversion_leaves_nothing(adapter, tmp_path, monkeypatch):
    from conversion.llama import LlamaModel
    from qlora_nb.export import export_gguf
    out = tmp_path/'model.gguf'
    out.write_bytes(b'the previous export')
    (tmp_path/'Modelfile').write_text('FROM ./model.gguf\n')
    def broken(self):
        Path(self.fname_out).write_bytes(b'GGUF half')   # the converter has begun writing ...
        raise RuntimeError('disk full')                  # ... and fails
    monkeypatch.setattr(LlamaModel, 'write', broken)
    with pytest.raises(RuntimeError, match='disk full'): export_gguf(adapter, out)
    assert sorted(x.name for x in tmp_path.iterdir()) == ['Modelfile', 'model.gguf']   # no temporary folder, no half file
    assert out.read_bytes() == b'the previous export' and (tmp_path/'Modelfile').read_text() == 'FROM ./model.gguf\n'

def byte_level_adapter(adapter, tmp_path)->Path:
    "The adapter, with its base and tokenizer swapped for a byte-level BPE tokenizer trained here (no pre-tokenizer hash the converter knows)."
    from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast
    from qlora_nb.config import CONFIG_NAME, load_config, save_config
    from qlora_nb.run import model_path
    from qlora_nb.tiny import SPECIAL_TOKENS, CHAT_TEMPLATE, read_sample_chats, chat_texts
    base, a = tmp_path/'bpe-base', tmp_path/'bpe-adapter'
    shutil.copytree(model_path('builtin:tiny'), base, ignore=shutil.ignore_patterns('tokenizer*', 'chat_template*'))
    shutil.copytree(adapter, a, ignore=shutil.ignore_patterns('tokenizer*', 'chat_template*'))
    bpe = Tokenizer(models.BPE()); bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False); bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(chat_texts(read_sample_chats()), trainers.BpeTrainer(vocab_size=2048, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token='<|im_end|>', pad_token='<|pad|>')
    tok.chat_template = CHAT_TEMPLATE
    for d in (base, a): tok.save_pretrained(d)
    cfg = load_config(a/CONFIG_NAME); cfg['model_name'] = str(base)
    (a/CONFIG_NAME).unlink(); save_config(cfg, a)
    return a

def test_unconvertible_tokenizer_is_refused_before_merge(adapter, tmp_path, monkeypatch):
    import qlora_nb.export as E
    from qlora_nb.config import ConfigError
    a = byte_level_adapter(adapter, tmp_path)
    monkeypatch.setattr(E, 'merge_adapter', lambda *x, **k: pytest.fail('merged before the tokenizer was checked'))
    t = time.time()
    with pytest.raises(ConfigError, match='BPE pre-tokenizer') as e: E.export_gguf(a, tmp_path/'out'/'model.gguf')
    assert time.time() - t < 30 and 'SentencePiece' in str(e.value) and not (tmp_path/'out').exists()
    err = refused(run('export', '--adapter', a, '--output', tmp_path/'out'/'model.gguf', timeout=120), 'BPE pre-tokenizer',
                  unwritten=[tmp_path/'out'])
    assert err.count('\n') == 0, err   # one sentence

def test_quantize(adapter, tmp_path, monkeypatch):
    "Without llama-cpp-python (its quantizer is tested in tests/test_llamacpp.py): llama-quantize on PATH is run, else its command is printed."
    import qlora_nb.export as E
    from qlora_nb.cli import export_text
    from qlora_nb.export import export_gguf
    monkeypatch.setattr(E, 'llama_cpp_module', lambda: None)
    bin_dir = tmp_path/'bin'; bin_dir.mkdir()
    monkeypatch.setenv('PATH', f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin")
    # no llama-quantize: the bf16 file, and one sentence saying what to run
    r = export_gguf(adapter, tmp_path/'a'/'model.gguf', quantize='q4_k_m')
    assert (r['outtype'], r['quantized']) == ('bf16', None)
    assert r['quantize_hint'] == ['llama-quantize', str(tmp_path/'a'/'model.gguf'), str(tmp_path/'a'/'model-Q4_K_M.gguf'), 'Q4_K_M']
    hint = export_text(r).splitlines()[-1]
    assert hint.startswith('llama-quantize is not on PATH') and hint.count('. ') == 0 and 'model-Q4_K_M.gguf Q4_K_M' in hint, hint
    # a llama-quantize on PATH is run: this one records its arguments and copies the file
    fake = bin_dir/'llama-quantize'
    fake.write_text(f"#!{sys.executable}\nimport shutil, sys, json\njson.dump(sys.argv[1:], open({str(tmp_path/'argv.json')!r}, 'w'))\n"
                    "shutil.copyfile(sys.argv[1], sys.argv[2])\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    r = export_gguf(adapter, tmp_path/'b'/'model.gguf', quantize='q4_k_m')
    argv = json.loads((tmp_path/'argv.json').read_text())
    assert argv[2:] == ['Q4_K_M'] and argv[0].endswith('model.gguf') and r['quantized'] == 'Q4_K_M' and r['quantize_hint'] is None
    assert sorted(x.name for x in (tmp_path/'b').iterdir()) == ['Modelfile', 'model.gguf']
    assert 'GGUF (Q4_K_M, from bf16' in export_text(r)

def test_system_prompt_of_the_run(tmp_path):
    from qlora_nb.export import run_system_prompt
    chats = [{'messages': [{'role': 'system', 'content': 'Be kind.'}, {'role': 'user', 'content': f'q{i}'}, {'role': 'assistant', 'content': 'a'}]} for i in range(3)]
    f = tmp_path/'d.jsonl'; f.write_text(''.join(json.dumps(c) + '\n' for c in chats))
    assert run_system_prompt({'training_data_json_path': str(f)}) == 'Be kind.'
    chats[1]['messages'] = chats[1]['messages'][1:]
    f.write_text(''.join(json.dumps(c) + '\n' for c in chats))
    assert run_system_prompt({'training_data_json_path': str(f)}) is None
    assert run_system_prompt({'training_data_json_path': str(tmp_path/'missing.jsonl')}) is None

def test_unigram_sentencepiece_is_refused(adapter, tmp_path):
    "A SentencePiece unigram tokenizer.model (llm-jp-3's kind) would be served by llama.cpp with another segmentation: refused, in one sentence."
    import io, sentencepiece as spm
    from qlora_nb.config import ConfigError
    from qlora_nb.export import check_convertible
    from qlora_nb.tiny import chat_texts, read_sample_chats, tokenizer_from_sentencepiece
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(chat_texts(read_sample_chats())), model_writer=buf, model_type='unigram', vocab_size=800,
                                   byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    d = tmp_path/'unigram'; d.mkdir()
    (d/'config.json').write_text(json.dumps({'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'vocab_size': 800}))
    (d/'tokenizer.model').write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    uni = Tokenizer(models.Unigram([(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.vocab_size())], unk_id=0, byte_fallback=True))
    tok = PreTrainedTokenizerFast(tokenizer_object=uni, unk_token='<unk>', bos_token='<s>', eos_token='</s>')
    with pytest.raises(ConfigError, match='unigram') as e: check_convertible(d, tok)
    assert str(e.value).count('. ') == 0 and 'llama.cpp' in str(e.value)
    (d/'tokenizer.model').unlink()   # known by the fast tokenizer's Unigram model too (llm-jp-3's renames its control pieces: its file is not staged)
    with pytest.raises(ConfigError, match='unigram'): check_convertible(d, tok)
