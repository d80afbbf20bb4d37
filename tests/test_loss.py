"The chunked loss against each family's own forward, for every family `05b_loss` turns it on for: loss and every gradient."
import pytest, torch
from transformers import AutoConfig, AutoModelForCausalLM
from qlora_nb.run import PLAIN_FAMILIES, logit_transform
from qlora_nb.loss import enable_chunked_loss, loss_path

TYPES = dict(LlamaForCausalLM='llama', MistralForCausalLM='mistral', Qwen2ForCausalLM='qwen2', Qwen3ForCausalLM='qwen3',
             Phi3ForCausalLM='phi3', GemmaForCausalLM='gemma', Olmo2ForCausalLM='olmo2', SmolLM3ForCausalLM='smollm3',
             Glm4ForCausalLM='glm4', Starcoder2ForCausalLM='starcoder2', Gemma2ForCausalLM='gemma2', Gemma3ForCausalLM='gemma3_text',
             CohereForCausalLM='cohere', Cohere2ForCausalLM='cohere2', GraniteForCausalLM='granite', Lfm2ForCausalLM='lfm2')
EXTRA = dict(gemma=dict(head_dim=8), gemma2=dict(head_dim=8, final_logit_softcapping=3.0), gemma3_text=dict(head_dim=8, final_logit_softcapping=3.0),
             qwen3=dict(head_dim=8), glm4=dict(head_dim=8), cohere=dict(logit_scale=0.25), cohere2=dict(logit_scale=0.25),
             granite=dict(logits_scaling=4.0), lfm2=dict(layer_types=['conv', 'full_attention']))   # LFM2: a convolution block and an attention block

def test_every_known_family_is_tested():
    assert set(PLAIN_FAMILIES) | {'Gemma2ForCausalLM', 'Gemma3ForCausalLM', 'CohereForCausalLM', 'Cohere2ForCausalLM', 'GraniteForCausalLM'} == set(TYPES)

@pytest.mark.parametrize('cls', sorted(TYPES))
def test_chunked_equals_plain(cls):
    t = TYPES[cls]
    cfg = AutoConfig.for_model(t, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               vocab_size=300, pad_token_id=0, bos_token_id=1, eos_token_id=2, **EXTRA.get(t, {}))
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg).float().train()
    assert type(m).__name__ == cls and logit_transform(m) is not None
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 300, (2, 17), generator=g); lab = ids.clone(); lab[:, :4] = -100; lab[1, 12:] = -100
    batch = dict(input_ids=ids, attention_mask=(lab != -100) | (torch.arange(17) < 12), labels=lab, num_items_in_batch=torch.tensor(25))
    ps = [p for p in m.parameters() if p.requires_grad]
    ref = m(**batch).loss; g_ref = torch.autograd.grad(ref, ps)
    enable_chunked_loss(m, True, chunk_mb=4 * 4 * 300 / 2**20)
    assert loss_path(m) == 'chunked'
    out = m(**batch); assert out.logits is None
    g_out = torch.autograd.grad(out.loss, ps)
    assert abs(out.loss.item() / ref.item() - 1) < 1e-5
    worst = max(((a - b).norm() / b.norm()).item() for a, b in zip(g_out, g_ref) if b.norm() > 0)
    assert worst < 1e-4, worst
