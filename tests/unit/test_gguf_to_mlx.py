"""convert_gguf end to end on tiny GGUF files written here, with random weights.

The weights start in HF layout, are written the way llama.cpp's convert script would (q/k
permuted for llama), and must come back bit-identical, so naming, shapes and un-permutation
are all checked without a 100 MB model.
"""

import json

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
mx = pytest.importorskip("mlx.core")

from serving.convert import gguf_to_mlx  # noqa: E402
from serving.convert.gguf_names import permute_qk  # noqa: E402

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 32, 4, 2, 64, 2
HEAD_DIM = HIDDEN // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "he ll", "hell o"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_alphabet():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return sorted(bytes_to_unicode().values())


def _tokens():
    return SPECIALS + _byte_alphabet() + ["he", "ll", "hell", "hello"]


def _hf_weights(arch, rng):
    def rand(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    vocab = len(_tokens())
    weights = {"model.embed_tokens.weight": rand(vocab, HIDDEN), "model.norm.weight": rand(HIDDEN)}
    if arch == "qwen2":
        weights["lm_head.weight"] = rand(vocab, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": rand(HIDDEN),
            p + "post_attention_layernorm.weight": rand(HIDDEN),
            p + "self_attn.q_proj.weight": rand(HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": rand(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": rand(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": rand(HIDDEN, HEADS * HEAD_DIM),
            p + "mlp.gate_proj.weight": rand(FFN, HIDDEN),
            p + "mlp.up_proj.weight": rand(FFN, HIDDEN),
            p + "mlp.down_proj.weight": rand(HIDDEN, FFN),
        }
        if arch == "qwen2":
            weights |= {
                p + "self_attn.q_proj.bias": rand(HEADS * HEAD_DIM),
                p + "self_attn.k_proj.bias": rand(KV_HEADS * HEAD_DIM),
                p + "self_attn.v_proj.bias": rand(KV_HEADS * HEAD_DIM),
            }
    return weights


_TO_GGUF = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}  # fmt: skip


def _gguf_name(hf_name):
    top = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    stem, kind = hf_name.rsplit(".", 1)
    if stem in top:
        return f"{top[stem]}.{kind}"
    _, _, index, part = stem.split(".", 3)
    return f"blk.{index}.{_TO_GGUF[part]}.{kind}"


def _write_gguf(path, arch, weights, *, pre):
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    tokens = _tokens()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    for name, array in weights.items():
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            array = permute_qk(array, HEADS if ".q_proj." in name else KV_HEADS)
        writer.add_tensor(_gguf_name(name), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(params=[("llama", "smollm"), ("qwen2", "qwen2")], ids=["llama", "qwen2"])
def tiny(request, tmp_path, monkeypatch):
    arch, pre = request.param
    # Small slices, so the chunked dequantisation path runs on a tiny embedding too.
    monkeypatch.setattr(gguf_to_mlx, "_CHUNK_ROWS", 7)
    weights = _hf_weights(arch, np.random.default_rng(0))
    _write_gguf(tmp_path / "tiny.gguf", arch, weights, pre=pre)
    out = gguf_to_mlx.convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out")
    return arch, weights, out


def test_weights_come_back_exactly(tiny):
    arch, weights, out = tiny
    converted = mx.load(str(out / "model.safetensors"))
    assert set(converted) == set(weights)
    for name, expected in weights.items():
        np.testing.assert_array_equal(np.array(converted[name]), expected, err_msg=name)


def test_config_describes_the_model(tiny):
    arch, _weights, out = tiny
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == arch
    assert (config["hidden_size"], config["num_hidden_layers"]) == (HIDDEN, LAYERS)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (HEADS, KV_HEADS)
    assert config["rms_norm_eps"] == 1e-5
    assert config["vocab_size"] == len(_tokens())
    assert config["tie_word_embeddings"] is (arch == "llama")
    assert config["eos_token_id"] == 2
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2, 0]  # <|im_end|>, then <|endoftext|>


def test_tokenizer_and_mlx_lm_load(tiny):
    import mlx_lm

    _arch, _weights, out = tiny
    model, tokenizer = mlx_lm.load(str(out))
    hello = _tokens().index("hello")
    assert tokenizer.encode("hello") == [hello]
    assert tokenizer.decode(tokenizer.encode("hello 12")) == "hello 12"
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHATML and config["eos_token"] == "<|im_end|>"
    messages = [{"role": "user", "content": "hello"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.encode(prompt)[:2] == [1, tokenizer.encode("user")[0]]  # specials stay whole
    assert isinstance(mlx_lm.generate(model, tokenizer, "hello", max_tokens=2), str)


def test_smollm_splits_digits(tmp_path):
    weights = _hf_weights("llama", np.random.default_rng(1))
    _write_gguf(tmp_path / "t.gguf", "llama", weights, pre="smollm")
    out = gguf_to_mlx.convert_gguf(tmp_path / "t.gguf", tmp_path / "out")
    from tokenizers import Tokenizer

    tokens = Tokenizer.from_file(str(out / "tokenizer.json")).encode("12").tokens
    assert tokens == ["1", "2"]


def test_output_is_atomic_and_not_overwritten(tmp_path, monkeypatch):
    weights = _hf_weights("qwen2", np.random.default_rng(2))
    _write_gguf(tmp_path / "t.gguf", "qwen2", weights, pre="qwen2")

    def boom(*_args, **_kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(gguf_to_mlx, "_convert_tensors", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        gguf_to_mlx.convert_gguf(tmp_path / "t.gguf", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.gguf"]  # no half folder, no temp

    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        gguf_to_mlx.convert_gguf(tmp_path / "t.gguf", tmp_path / "out")
    with pytest.raises(ValueError, match="dtype"):
        gguf_to_mlx.convert_gguf(tmp_path / "t.gguf", tmp_path / "x", dtype="int8")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dtype_is_applied(tmp_path, dtype):
    weights = _hf_weights("llama", np.random.default_rng(3))
    _write_gguf(tmp_path / "t.gguf", "llama", weights, pre="smollm")
    out = gguf_to_mlx.convert_gguf(tmp_path / "t.gguf", tmp_path / "out", dtype=dtype)
    converted = mx.load(str(out / "model.safetensors"))
    assert {str(a.dtype) for a in converted.values()} == {f"mlx.core.{dtype}"}
