"""Configuration of RemoteDecoder, a tiny decoder-only language model written for qlora_nb's tests.

It stands for the models whose modeling code ships in the model folder (`auto_map` in config.json, loaded with
`trust_remote_code=True`), as PLaMo 2 does; it is not PLaMo's architecture, only the same way of being loaded."""
from transformers import PretrainedConfig


class RemoteDecoderConfig(PretrainedConfig):
    model_type = "remote_decoder"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=1024, rope_base=10000.0, norm_eps=1e-6, initializer_range=0.02, use_cache=True,
                 bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False, **kwargs):
        self.vocab_size, self.hidden_size, self.intermediate_size = vocab_size, hidden_size, intermediate_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.max_position_embeddings, self.rope_base, self.norm_eps = max_position_embeddings, rope_base, norm_eps
        self.initializer_range, self.use_cache = initializer_range, use_cache
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
