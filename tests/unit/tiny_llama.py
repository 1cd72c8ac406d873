"""A tiny random llama built in-process, for generator tests that need a real mlx-lm model
without any weights on disk."""

from __future__ import annotations


def tiny_llama(seed: int):
    import mlx.core as mx
    from mlx_lm.models import llama

    mx.random.seed(seed)
    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=97,
                           rope_theta=10000.0, tie_word_embeddings=True)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return model
