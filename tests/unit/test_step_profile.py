"""The step profile: the median interval, the summary's derived figures, the evidence schemas,
the report section, and the real measuring code on a tiny random llama."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest
from scipy.stats import binom

from harness import evidence
from harness.profile_summary import ENGINE_PART, SAMPLE_PART, WHOLE_PART, median_interval, summarize_profile
from harness.report_profile import markdown


def test_median_interval_uses_order_statistics_with_the_coverage_asked():
    values = list(range(1, 21))  # n = 20: x_(6), x_(15), coverage 1 - 2 P(B <= 5) = 0.9586
    assert median_interval(values) == (6, 15)
    assert 1 - 2 * binom.cdf(5, 20, 0.5) >= 0.95 > 1 - 2 * binom.cdf(6, 20, 0.5)
    assert median_interval(list(range(5))) == (None, None)  # 5 repeats cannot give 95%
    assert median_interval([3, 1, 2, 6, 5, 4]) == (1, 6)  # n = 6: the extremes cover 96.9%
    assert median_interval([1.0]) == (None, None)


def _part(batch, part, group, seconds, repeat, calls=1):
    return {"type": "step_part", "batch": batch, "part": part, "group": group, "repeat": repeat,
            "seconds": seconds, "calls_per_step": calls}


def _records():
    recs = []
    for r in range(3):
        recs += [_part(2, ENGINE_PART, "engine", 0.100 + r * 0.001, r), _part(2, WHOLE_PART, "whole", 0.080, r),
                 _part(2, SAMPLE_PART, "sampling", 0.005, r), _part(2, "q_proj", "projections", 0.010, r, 30),
                 _part(2, "down_proj", "mlp", 0.030, r, 30), _part(2, "lm_head", "lm_head", 0.020, r),
                 _part(2, "SSE encoding (OpenAI chat chunk)", "host", 0.0002, r, 2),
                 _part(2, "detokenise (streaming)", "host", 0.0001, r, 2)]
    return recs + [{"type": "step_graph", "batch": 2, "ops": 40, "ops_by_primitive": {"Matmul": 10, "Add": 30}}]


def test_summary_derives_what_the_step_leaves_over():
    block = summarize_profile(_records())
    (step,) = block["steps"]
    assert step["engine_step_s"] == pytest.approx(0.101) and step["forward_whole_s"] == 0.080
    assert step["outside_forward_s"] == pytest.approx(0.101 - 0.080 - 0.005)
    assert step["forward_parts_sum_s"] == pytest.approx(0.060)
    assert step["by_group_s"] == pytest.approx({"projections": 0.010, "mlp": 0.030, "lm_head": 0.020})
    assert step["host_per_token_s"] == pytest.approx(0.0003) and step["ops"] == 40
    assert [p["group"] for p in block["parts"]][:2] == ["whole", "engine"]  # the totals lead
    assert all(p["n"] == 3 and p["ci_low_s"] is None for p in block["parts"])


def test_schemas_take_the_records_and_the_block():
    for rec in _records():
        evidence._validator("raw_record").validate(rec)
    with pytest.raises(jsonschema.ValidationError):
        evidence._validator("raw_record").validate({**_records()[0], "seconds": -1})
    summary = evidence._validator("summary").schema
    block = {"$defs": summary["$defs"], **summary["properties"]["profile"]}
    jsonschema.validate(summarize_profile(_records()), block)


def test_report_section_shows_the_step_and_its_bound():
    roof = {"gemm": {"n": 2048, "gflops": 200.0}, "bandwidth": {"bound_gbs": 40.0}, "device": "cpu",
            "dtype": "float32", "formula": "f",
            "model": {"parameters": 135_000_000, "bytes_per_step": 540_000_000, "flops_per_token": 270_000_000}}
    lines = markdown(summarize_profile(_records()), row=lambda cells: "| " + " | ".join(cells) + " |", roofline=roof)
    text = "\n".join(lines)
    assert "| 2 | 101 | 80 | 60 | 5 | 16 | 0.3 | 40 | 13.5 (bandwidth) | 13% |" in text
    assert "| 2 | 10 (17%) | n/a | n/a | 30 (50%) | 20 (33%) | n/a |" in text


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from serving.catalog import default_cache_dir
    from serving.convert.random_weights import build_random_model

    found = sorted(default_cache_dir().glob("smollm2-135m-*-float32"))
    if not found:
        pytest.skip("the converted default model (its tokenizer) is not cached here")
    source = tmp_path_factory.mktemp("source")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (found[0] / name).exists():
            shutil.copy2(found[0] / name, source / name)
    config = json.loads((found[0] / "config.json").read_text())
    config.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16)
    (source / "config.json").write_text(json.dumps(config))
    return build_random_model(source, tmp_path_factory.mktemp("tiny") / "model", dtype="float32")


def test_the_real_profile_on_a_tiny_llama(tiny_llama):
    from harness.step_profile import profile

    result = profile(str(tiny_llama), batches=[1, 3], repeats=2, context=8)
    assert result["model"] == {"type": "llama", "layers": 2, "parts_broken_down": True}
    parts = {(r["batch"], r["part"]) for r in result["records"] if r["type"] == "step_part"}
    for b in (1, 3):
        for name in (ENGINE_PART, "engine step (compiled, --decode-step compiled)", WHOLE_PART, SAMPLE_PART, "q_proj", "attention core (rope, KV append, sdpa)",
                     "input_layernorm", "down_proj", "lm_head", "detokenise (streaming)",
                     "stop-string search and hold-back", "event delivery (handle queue)",
                     "SSE encoding (OpenAI chat chunk)"):
            assert (b, name) in parts
    for rec in result["records"]:
        evidence._validator("raw_record").validate(rec)
    graphs = [r for r in result["records"] if r["type"] == "step_graph"]
    assert [g["batch"] for g in graphs] == [1, 3]
    assert all(g["ops"] > 0 and g["ops_by_primitive"].get("Matmul", 0) >= 2 * 7 for g in graphs)
    per_layer = [r for r in result["records"] if r.get("part") == "q_proj"]
    assert all(r["calls_per_step"] == 2 for r in per_layer) and len(per_layer) == 2 * 2
