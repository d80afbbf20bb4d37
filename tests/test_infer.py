"Merge an adapter into the dequantized NF4 base and compare logits; chat and generate from the command line."
import pytest, torch
from conftest import run

@pytest.fixture(scope='module')
def adapter(trained_adapter):
    return trained_adapter   # the session's 12-step adapter (conftest), shared with test_export and test_resolved_run

def test_merge_matches_the_4bit_model(adapter, tmp_path):
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    from qlora_nb.infer import load_for_inference, merge_adapter, rel_l2
    from qlora_nb.run import model_path
    from qlora_nb.tiny import read_sample_chats
    out = merge_adapter(adapter, tmp_path/'merged')
    assert not list(out.glob('*.bin')) and (out/'model.safetensors').exists() and (out/'tokenizer.json').exists()
    merged = AutoModelForCausalLM.from_pretrained(out)                       # plain transformers, no quantization config
    assert merged.dtype == torch.bfloat16 and not hasattr(merged.config, 'quantization_config')
    model, tok = load_for_inference(adapter)
    wrong = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path('builtin:tiny')), adapter).merge_and_unload()
    batch = [tok.apply_chat_template(c['messages'], return_tensors='pt', return_dict=True) for c in read_sample_chats()[-4:]]
    with torch.no_grad():
        ref, got, bad = (torch.cat([m(**b).logits[0] for b in batch]) for m in (model, merged, wrong))
        with model.disable_adapter(): base = torch.cat([model(**b).logits[0] for b in batch])
    d_ok, d_bad, d_adapter = rel_l2(ref, got), rel_l2(ref, bad), rel_l2(ref, base)
    print(f"\nmerge: rel L2 vs 4-bit+adapter: merged into dequantized NF4 {d_ok:.4f}; merged into re-loaded 16-bit {d_bad:.4f}; "
          f"(adapter off: {d_adapter:.4f})")
    assert d_adapter > 1e-2            # the adapter changes the logits, so agreement means something
    assert d_ok < 5e-2 and d_ok < d_bad
    with pytest.raises(Exception, match='not empty'): merge_adapter(adapter, tmp_path/'merged')

def test_generate_and_chat_cli(adapter):
    g = run('generate', '--adapter', adapter, '--prompt', '日本の首都はどこですか？', '--max-new-tokens', '8', timeout=120, rc=0)
    assert g.stdout.endswith('\n'), g.stderr          # the streamer ran to its end (12 steps may answer with EOS alone)
    c = run('chat', '--adapter', adapter, '--max-new-tokens', '8', input='こんにちは\n日本の首都は？\n\n', timeout=120, rc=0)
    assert c.stderr.count('> ') == 3 and c.stdout.count('\n') == 2   # two answers streamed, then the empty line ends it

def tied_model(d):
    "A tiny Llama whose output layer is its input embedding (tie_word_embeddings, as Qwen2.5-0.5B and Gemma have), with the tiny tokenizer."
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from qlora_nb.tiny import TINY_CONFIG, tiny_model_dir
    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    conf = LlamaConfig(**{**TINY_CONFIG, 'tie_word_embeddings': True}, vocab_size=len(tok), bos_token_id=None,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    m = LlamaForCausalLM(conf).to(torch.bfloat16)
    m.save_pretrained(d); tok.save_pretrained(d)
    return m

def test_dequantized_base_of_a_tied_embedding_model(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM
    from qlora_nb.config import ConfigError, load_config
    from qlora_nb.infer import dequantized_base
    from qlora_nb.run import resolve_run
    orig = tied_model(tmp_path/'tied')
    run = resolve_run(load_config(overrides=[f'model_name={tmp_path}/tied']), for_training=False)
    m = dequantized_base(run)
    assert m.config.tie_word_embeddings and m.lm_head.weight is m.model.embed_tokens.weight
    assert torch.equal(m.model.embed_tokens.weight, orig.model.embed_tokens.weight.float())   # not quantized: copied exactly
    # A plain model the 4-bit weights do not fit is a one-sentence error, not an AssertionError.
    from_config = AutoModelForCausalLM.from_config
    monkeypatch.setattr(AutoModelForCausalLM, 'from_config', lambda conf, **kw: from_config(conf.__class__(**{**conf.to_dict(), 'num_hidden_layers': 5}), **kw))
    with pytest.raises(ConfigError, match='cannot be merged'): dequantized_base(run)
