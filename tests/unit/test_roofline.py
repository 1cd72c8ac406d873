"""The roofline: the model's size from safetensors headers, the decode-step bound, the probe's
parsing, the manifest block's schema, and the report's achieved/bound rows."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from harness import evidence, roofline
from harness.report_roofline import rows


def _safetensors(path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A header-only .safetensors file (data bytes are zeros)."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = roofline.DTYPE_BYTES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))


def test_tied_model_reads_every_weight(tmp_path):
    _safetensors(tmp_path / "model.safetensors", {"model.embed_tokens.weight": ("F32", [100, 8]),
                                                  "model.layers.0.mlp.up_proj.weight": ("F32", [16, 8]),
                                                  "model.norm.weight": ("F32", [8])})
    size = roofline.model_size(tmp_path)
    assert size["parameters"] == 800 + 128 + 8 and size["tied_embeddings"]
    assert size["bytes_per_step"] == size["weight_bytes"] == 4 * 936
    assert size["flops_per_token"] == 2 * 936


def test_untied_input_embedding_is_looked_up_not_read(tmp_path):
    _safetensors(tmp_path / "a.safetensors", {"model.embed_tokens.weight": ("BF16", [100, 8])})
    _safetensors(tmp_path / "b.safetensors", {"lm_head.weight": ("BF16", [100, 8]),
                                              "model.layers.0.self_attn.q_proj.weight": ("BF16", [8, 8])})
    size = roofline.model_size(tmp_path)
    assert not size["tied_embeddings"] and size["parameters"] == 800 + 800 + 64
    assert size["bytes_per_step"] == 2 * (800 + 64) and size["flops_per_token"] == 2 * 864


def test_quantised_weights_count_unpacked_parameters(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"quantization": {"bits": 4, "group_size": 64}}))
    _safetensors(tmp_path / "model.safetensors", {"q.weight": ("U32", [128, 8]),  # 128 x 64 at 4 bits
                                                  "q.scales": ("F16", [128, 1]), "q.biases": ("F16", [128, 1])})
    size = roofline.model_size(tmp_path)
    assert size["parameters"] == 128 * 64 and size["quantization_bits"] == 4
    assert size["bytes_per_step"] == 128 * 8 * 4 + 2 * 128 * 2


def test_no_weights_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no .safetensors"):
        roofline.model_size(tmp_path)


ROOF = {"device": "cpu", "dtype": "float32", "gemm": {"n": 2048, "gflops": 200.0},
        "bandwidth": {"bound_gbs": 40.0, "read_gbs": 8.0, "copy_gbs": 4.0, "gemv_gbs": 40.0},
        "model": {"parameters": 135_000_000, "bytes_per_step": 540_000_000, "flops_per_token": 270_000_000},
        "formula": roofline.FORMULA}


def test_bound_is_bandwidth_at_batch_one_and_compute_at_large_batch():
    one = roofline.step_bound(ROOF, 1)
    assert one["bound_by"] == "bandwidth" and one["step_s"] == pytest.approx(540e6 / 40e9)
    assert one["tok_per_s"] == pytest.approx(40e9 / 540e6)
    big = roofline.step_bound(ROOF, 64)
    assert big["bound_by"] == "compute" and big["step_s"] == pytest.approx(64 * 270e6 / 200e9)
    assert big["tok_per_s"] == pytest.approx(200e9 / 270e6)  # compute-bound: b cancels


def test_measure_takes_medians_and_the_best_bandwidth(tmp_path):
    fake = tmp_path / "fake_python"
    out = {"device": "Device(cpu, 0)", "dtype": "float32", "gemm_n": 2048, "gemm_gflops": [100, 300, 200],
           "read_gbs": [8, 9, 7], "copy_gbs": [4, 4, 4], "gemv_gbs": [30, 50, 40], "gemv_shape": [1, 4096, 16384]}
    fake.write_text(f"#!{sys.executable}\nimport os, sys\nassert os.environ.get('LD_PRELOAD') == '/x.so'\n"
                    f"print({json.dumps(json.dumps(out))})\n")
    fake.chmod(0o755)
    got = roofline.measure(preload="/x.so", python=str(fake))
    assert got["gemm"]["gflops"] == 200 and got["bandwidth"]["bound_gbs"] == 40
    assert got["bandwidth"]["read_gbs"] == 8 and got["ld_preload"] == "/x.so"


def test_probe_failure_is_reported(tmp_path):
    fake = tmp_path / "broken"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('no mlx here')\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="no mlx here"):
        roofline.measure(preload=None, python=str(fake))


def test_manifest_schema_takes_a_roofline_or_its_error():
    schema = evidence._validator("manifest").schema
    import jsonschema
    block = {"$defs": schema["$defs"], **schema["properties"]["roofline"]}
    jsonschema.validate(ROOF, block)
    jsonschema.validate({"error": "probe failed"}, block)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in ROOF.items() if k != "gemm"}, block)


def test_report_rows_divide_achieved_by_the_bound():
    man = {"roofline": ROOF, "profile": {"flags": {"max_concurrency": 8}}}
    summary = {"groups": [
        {"server": "ours", "case": "c1", "metrics": {"output_tok_per_s": {"median": 30.0},
                                                     "itl_p50_s": {"median": 0.02}}},
        {"server": "ours", "case": "c10", "metrics": {"output_tok_per_s": {"median": 148.0}}},
        {"server": "ours", "case": "emb", "metrics": {"output_tok_per_s": {"median": 0.0}}},
    ]}
    got = rows(man, summary, {("ours", "c1"): 1, ("ours", "c10"): 10, ("ours", "emb"): 4})
    assert [r[:3] for r in got] == [["ours", "c1", "1"], ["ours", "c10", "8"]]  # capped at max_concurrency
    bound1 = 40e9 / 540e6  # 74.07 tok/s
    assert got[0][6] == f"{100 * 30.0 / bound1:.1f}%" and got[0][8] == f"{100 * 50 / bound1:.1f}%"
    assert got[1][4] == "bandwidth" and got[1][6] == f"{100 * 148.0 / (8 * bound1):.1f}%"
    assert rows({"roofline": {"error": "x"}}, summary, {}) == []


def test_a_cases_bound_adds_its_prompts_prefill_to_its_decode_steps():
    # 32 requests of 36 fresh prompt tokens and 32 answer tokens, compute-bound at b = 32:
    # 32 * 36 prefilled tokens, then 31 steps of 32 tokens, for 32 * 32 answer tokens.
    got = roofline.case_bound(ROOF, 32, prompt_tokens=36, output_tokens=32)
    per_token = 270e6 / 200e9
    assert got["prefill_s"] == pytest.approx(32 * 36 * per_token)
    assert got["tok_per_s"] == pytest.approx(32 * 32 / ((32 * 36 + 31 * 32) * per_token))
    # A lone short prompt still reads every weight once.
    assert roofline.case_bound(ROOF, 1, prompt_tokens=1, output_tokens=1)["prefill_s"] == pytest.approx(540e6 / 40e9)


def test_report_rows_take_the_request_shape_from_the_runs_counts():
    man = {"roofline": ROOF}
    group = {"server": "ours", "case": "c32", "metrics": {"output_tok_per_s": {"median": 100.0},
                                                          "total_tok_per_s": {"median": 212.5}},
             "prompt_cache": {"requests": 10, "prompt_tokens": 360, "cached_tokens": 90}}
    (row,) = rows(man, {"groups": [group]}, {("ours", "c32"): 32})
    want = roofline.case_bound(ROOF, 32, prompt_tokens=27, output_tokens=32)["tok_per_s"]  # 36 prompt, 9 cached
    assert row[9] == f"{want:.0f}" and row[10] == f"{100 * 100.0 / want:.1f}%"
    del group["prompt_cache"]  # runs before the counts were recorded: no case bound
    assert rows(man, {"groups": [group]}, {("ours", "c32"): 32})[0][9:] == ["n/a", "n/a"]
