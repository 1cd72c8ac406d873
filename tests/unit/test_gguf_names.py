import numpy as np
import pytest

from serving.convert.gguf_names import (
    UnsupportedTensorError,
    architecture_info,
    hf_tensor_name,
    numpy_shape,
    permute_qk,
    qk_head_count,
    unpermute_qk,
)


@pytest.mark.parametrize(
    ("gguf_name", "hf_name"),
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
        ("blk.7.ffn_norm.weight", "model.layers.7.post_attention_layernorm.weight"),
        ("blk.12.attn_q.weight", "model.layers.12.self_attn.q_proj.weight"),
        ("blk.12.attn_q.bias", "model.layers.12.self_attn.q_proj.bias"),
        ("blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight"),
        ("blk.1.attn_v.bias", "model.layers.1.self_attn.v_proj.bias"),
        ("blk.1.attn_output.weight", "model.layers.1.self_attn.o_proj.weight"),
        ("blk.2.ffn_gate.weight", "model.layers.2.mlp.gate_proj.weight"),
        ("blk.2.ffn_up.weight", "model.layers.2.mlp.up_proj.weight"),
        ("blk.2.ffn_down.weight", "model.layers.2.mlp.down_proj.weight"),
    ],
)
def test_tensor_names_map_to_hf(gguf_name, hf_name):
    assert hf_tensor_name(gguf_name) == hf_name


@pytest.mark.parametrize(
    "gguf_name", ["rope_freqs.weight", "blk.0.attn_qkv.weight", "blk.x.attn_q.weight", "output"]
)
def test_unknown_tensors_are_refused_not_dropped(gguf_name):
    with pytest.raises(UnsupportedTensorError, match="no Hugging Face name"):
        hf_tensor_name(gguf_name)


def test_only_q_and_k_get_head_counts():
    assert qk_head_count("blk.3.attn_q.weight", n_head=9, n_head_kv=3) == 9
    assert qk_head_count("blk.3.attn_k.weight", n_head=9, n_head_kv=3) == 3
    assert qk_head_count("blk.3.attn_v.weight", n_head=9, n_head_kv=3) is None
    assert qk_head_count("token_embd.weight", n_head=9, n_head_kv=3) is None


def test_architectures():
    assert architecture_info("llama").permute_qk
    assert not architecture_info("qwen2").permute_qk
    assert architecture_info("qwen2").qkv_bias
    with pytest.raises(ValueError, match="llama, qwen2"):
        architecture_info("gpt2")


def test_numpy_shape_reverses_ggml_order():
    assert numpy_shape([576, 49152]) == (49152, 576)
    assert numpy_shape(np.array([896])) == (896,)


def test_permutation_interleaves_rotary_halves():
    # One head of 4 rows: HF keeps halves [r0 r1 | r2 r3]; llama.cpp interleaves them.
    rows = np.arange(4, dtype=np.float32)[:, None]
    assert permute_qk(rows, 1)[:, 0].tolist() == [0, 2, 1, 3]
    assert unpermute_qk(np.array([[0], [2], [1], [3]], np.float32), 1)[:, 0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(("n_head", "head_dim", "cols"), [(9, 64, 576), (3, 64, 576), (14, 8, 5), (2, 4, 0)])
def test_unpermute_inverts_llama_cpp_permute(n_head, head_dim, cols):
    rng = np.random.default_rng(n_head)
    shape = (n_head * head_dim, cols) if cols else (n_head * head_dim,)  # cols=0: a bias
    hf = rng.standard_normal(shape).astype(np.float32)
    gguf = permute_qk(hf, n_head)
    assert not np.array_equal(gguf, hf)
    np.testing.assert_array_equal(unpermute_qk(gguf, n_head), hf)


def test_unpermute_rejects_rows_that_do_not_split():
    with pytest.raises(ValueError, match="cannot be split"):
        unpermute_qk(np.zeros((6, 2), np.float32), 2)


def test_the_tokenizer_tables_are_found_where_older_transformers_keep_them(monkeypatch):
    """transformers 5.20+ keep them in integrations.gguf.gguf_tokenizer_mapping; 4.50-5.17 in
    integrations.ggml (5.17 has the newer module, without the table)."""
    import sys
    import types

    from serving.convert import gguf_tokenizer

    newer = types.ModuleType("transformers.integrations.gguf.gguf_tokenizer_mapping")
    older = types.ModuleType("transformers.integrations.ggml")
    older.GGUF_TOKENIZER_MAPPING = {"tokenizer": {}, "tokenizer_config": {}}
    package = types.ModuleType("transformers.integrations.gguf")
    package.gguf_tokenizer_mapping = newer
    monkeypatch.setitem(sys.modules, "transformers.integrations.gguf", package)
    monkeypatch.setitem(sys.modules, "transformers.integrations.gguf.gguf_tokenizer_mapping", newer)
    monkeypatch.setitem(sys.modules, "transformers.integrations.ggml", older)
    import transformers.integrations as integrations
    monkeypatch.setattr(integrations, "ggml", older, raising=False)
    assert gguf_tokenizer._transformers_gguf() is older
    newer.GGUF_TOKENIZER_MAPPING = {}
    assert gguf_tokenizer._transformers_gguf() is newer


def test_the_pre_tokenizer_name_is_read_when_older_transformers_do_not_map_it(monkeypatch):
    """Before 5.20 transformers' table has no "ggml.pre"; SmolLM's digit split depends on it."""
    import types

    from serving.convert import gguf_tokenizer

    older = types.SimpleNamespace(GGUF_TOKENIZER_MAPPING={"tokenizer": {"ggml.tokens": "tokens"},
                                                          "tokenizer_config": {}})
    monkeypatch.setattr(gguf_tokenizer, "_transformers_gguf", lambda: older)
    field = lambda value: types.SimpleNamespace(contents=lambda: value)  # noqa: E731
    reader = types.SimpleNamespace(fields={"tokenizer.ggml.tokens": field(["a", "b"]),
                                           "tokenizer.ggml.pre": field("smollm")})
    tokenizer, _ = gguf_tokenizer.read_tokenizer_metadata(reader)
    assert tokenizer == {"tokens": ["a", "b"], "pre_tokenizer_type": "smollm"}
