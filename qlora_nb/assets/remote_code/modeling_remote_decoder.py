"""RemoteDecoder: a tiny decoder-only language model written for qlora_nb's tests, shipped beside its weights and loaded
with `trust_remote_code=True`.

Pre-norm blocks of causal self-attention (one fused `wqkv` projection, rotary positions) and a gated MLP (one fused `w_in`,
then `w_out`), RMS norms, an untied `unembed` head. Its layer names are its own, so nothing that knows Llama's names finds
them: LoRA's `all-linear` has to read them off the model. It supports gradient checkpointing and generation with a cache."""
import torch
from torch import nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_remote_decoder import RemoteDecoderConfig


class RemoteDecoderRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotate(x, pos, base):
    "Rotary position embedding of `x` [batch, heads, seq, dim] at positions `pos` [batch, seq]."
    d = x.shape[-1]
    inv = 1.0 / (base ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    ang = pos[:, None, :, None].float() * inv
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x.float()[..., ::2], x.float()[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2).to(x.dtype)


class RemoteDecoderAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.heads, self.head_dim, self.layer_idx = config.num_attention_heads, config.hidden_size // config.num_attention_heads, layer_idx
        self.base = config.rope_base
        self.wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x, pos, mask, cache=None):
        b, n, _ = x.shape
        q, k, v = self.wqkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, pos, self.base), rotate(k, pos, self.base)
        if cache is not None: k, v = cache.update(k, v, self.layer_idx)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(b, n, -1))


class RemoteDecoderMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.w_in = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.w_out = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        gate, up = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(gate) * up)


class RemoteDecoderBlock(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.norm1, self.norm2 = (RemoteDecoderRMSNorm(config.hidden_size, config.norm_eps) for _ in range(2))
        self.attn, self.mlp = RemoteDecoderAttention(config, layer_idx), RemoteDecoderMLP(config)

    def forward(self, x, pos, mask, past_key_values=None):
        x = x + self.attn(self.norm1(x), pos, mask, past_key_values)
        return x + self.mlp(self.norm2(x))


class RemoteDecoderPreTrainedModel(PreTrainedModel):
    config_class = RemoteDecoderConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RemoteDecoderBlock"]
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RemoteDecoderRMSNorm):
            nn.init.ones_(module.weight)


class RemoteDecoderModel(RemoteDecoderPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.tok_emb = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(RemoteDecoderBlock(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = RemoteDecoderRMSNorm(config.hidden_size, config.norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self): return self.tok_emb

    def set_input_embeddings(self, value): self.tok_emb = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None,
                use_cache=None, **kwargs):
        x = self.tok_emb(input_ids) if inputs_embeds is None else inputs_embeds
        b, n = x.shape[:2]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training: use_cache = False
        if use_cache and past_key_values is None: past_key_values = DynamicCache(config=self.config)
        if not use_cache: past_key_values = None
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        qpos = torch.arange(past, past + n, device=x.device)
        if position_ids is None: position_ids = qpos[None].expand(b, n)
        kpos = torch.arange(past + n, device=x.device)
        mask = (kpos[None, :] <= qpos[:, None])[None, None]             # causal: [1, 1, n, past + n]
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, :].bool()        # padding
            mask = mask | (kpos[None, :] == qpos[:, None])[None, None]   # a padded position sees itself (no empty row)
        for block in self.blocks: x = block(x, position_ids, mask, past_key_values=past_key_values)
        return BaseModelOutputWithPast(last_hidden_state=self.final_norm(x), past_key_values=past_key_values)


class RemoteDecoderForCausalLM(RemoteDecoderPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.model = RemoteDecoderModel(config)
        self.unembed = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self): return self.model.tok_emb

    def set_input_embeddings(self, value): self.model.tok_emb = value

    def get_output_embeddings(self): return self.unembed

    def set_output_embeddings(self, value): self.unembed = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None,
                labels=None, use_cache=None, logits_to_keep=0, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache)
        h = out.last_hidden_state
        logits = self.unembed(h[:, -logits_to_keep:] if isinstance(logits_to_keep, int) and logits_to_keep else h)
        loss = None if labels is None else self.loss_function(logits, labels, self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)
