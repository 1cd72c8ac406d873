"""Cache-aware comparisons: server variants and their cache state, which pairs bench compares,
TTFT read in its own direction, and the new evidence fields within the schemas."""

from __future__ import annotations

import io
import json

import jsonschema
import pytest
from rich.console import Console

from harness import evidence, metrics
from harness.commands import bench_comparisons, cache_label
from harness.metrics import Comparison
from harness.publish import print_summary
from harness.servers import ServerSpec, command, parse_server_list, prefix_cache_state

from .test_metrics import request, run


def _entry(label: str, kind: str, prefix_cache: str, status: str = "ran") -> dict:
    return {"label": label, "kind": kind, "revision": None, "argv": [], "status": status,
            "reason": None if status == "ran" else "not installed", "health": None, "prefix_cache": prefix_cache}


def test_ours_nocache_is_our_server_with_the_cache_off():
    specs = parse_server_list("ours-nocache, mlx-lm,mlx-lm-nocache,vllm-mlx")
    assert [(s.label, s.kind) for s in specs] == [("ours-nocache", "mlx-proof"), ("mlx-lm", "mlx-lm"),
                                                  ("mlx-lm-nocache", "mlx-lm-nocache"), ("vllm-mlx", "vllm-mlx")]
    assert specs[0].extra_args == ("--prefix-cache-bytes", "0")
    with pytest.raises(ValueError, match="known: ours-nocache, ours-deterministic, ours-batch-invariant, ours-compiled, mlx-lm"):
        parse_server_list("ours-cold")
    with pytest.raises(ValueError, match="twice"):
        parse_server_list("mlx-lm,mlx-lm")


def test_ours_nocache_command_line_carries_the_flag():
    from harness.servers import ModelFolder
    model = ModelFolder("smollm2-135m", "/m", "0" * 64, "catalog", "float32")
    argv, _ = command(parse_server_list("ours-nocache")[0], model=model, port=1, profile="text-default")
    assert argv[-2:] == ["--prefix-cache-bytes", "0"]


@pytest.mark.parametrize("spec, health, state", [
    (ServerSpec("mlx-lm", "mlx-lm"), None, "on"),
    (ServerSpec("mlx-lm-nocache", "mlx-lm-nocache"), None, "off"),
    (ServerSpec("vllm-mlx", "vllm-mlx"), None, "on"),
    (ServerSpec("ours", "mlx-proof"), {"config": {"prefix_cache_bytes": 1 << 30}}, "on"),
    (ServerSpec("ours", "mlx-proof"), {"config": {"prefix_cache_bytes": 0}}, "off"),
    (ServerSpec("ours-nocache", "mlx-proof", extra_args=("--prefix-cache-bytes", "0")), None, "off"),
    (ServerSpec("x", "mlx-proof", extra_args=("--prefix-cache-bytes=4096",)), {"config": {}}, "on"),
    (ServerSpec("A", "mlx-proof", revision="abc123"), {"config": {"max_concurrency": 8}}, "unknown"),
])
def test_prefix_cache_state(spec, health, state):
    assert prefix_cache_state(spec, health=health) == state


def test_bench_pairs_warm_with_warm_cold_with_cold_and_the_cache_with_itself():
    servers = [_entry("ours", "mlx-proof", "on"), _entry("ours-nocache", "mlx-proof", "off"),
               _entry("mlx-lm", "mlx-lm", "on"), _entry("mlx-lm-nocache", "mlx-lm-nocache", "off"),
               _entry("vllm-mlx", "vllm-mlx", "on", status="unavailable")]
    got = [(c.a, c.b, c.cache, c.metrics) for c in bench_comparisons(servers)]
    both = ("output_tok_per_s", "ttft_p50_s")
    assert got == [("ours", "mlx-lm", "warm", both), ("ours-nocache", "mlx-lm-nocache", "cold", both),
                   ("ours", "ours-nocache", "warm-vs-cold", both)]
    assert [(c.a, c.b) for c in bench_comparisons(servers[:1] + servers[2:3])] == [("ours", "mlx-lm")]
    assert bench_comparisons(servers[:1] + servers[3:4]) == []  # warm vs cold is not a server comparison


def test_a_server_that_cannot_say_is_compared_as_before():
    servers = [_entry("ours", "mlx-proof", "unknown"), _entry("mlx-lm", "mlx-lm", "on"),
               _entry("mlx-lm-nocache", "mlx-lm-nocache", "off")]
    assert [(c.b, c.cache) for c in bench_comparisons(servers)] == [("mlx-lm", "unknown"),
                                                                    ("mlx-lm-nocache", "unknown")]
    assert cache_label("on", "on") == "warm" and cache_label("off", "on") == "cold-vs-warm"


def _two_servers(ttft_a: float, ttft_b: float, repeats: int = 4) -> list[dict]:
    recs = []
    for server, ttft in (("ours", ttft_a), ("peer", ttft_b)):
        for rep in range(repeats):
            jitter = 1 + 0.01 * rep
            recs += [request(server, "agent", rep, 0, ttft=ttft * jitter, e2e=2.0, completion=20),
                     run(server, "agent", rep, wall=2.0 * (1 + 0.02 * (rep % 2)))]
    return recs


def test_ttft_ratio_is_a_over_b_and_lower_reads_faster():
    s = metrics.summarize(_two_servers(0.1, 0.4), comparisons=[
        Comparison("*", "ours", "peer", ("output_tok_per_s", "ttft_p50_s"), "warm")])
    tput, ttft = s["comparisons"]
    assert (tput["metric"], ttft["metric"]) == ("output_tok_per_s", "ttft_p50_s")
    assert ttft["ratio"] == pytest.approx(0.25) and ttft["verdict"] == "faster" and ttft["cache"] == "warm"
    assert tput["verdict"] == "no detectable difference"
    slow = metrics.summarize(_two_servers(0.4, 0.1),
                             comparisons=[Comparison("agent", "ours", "peer", ("ttft_p50_s",))])
    (only,) = slow["comparisons"]
    assert only["ratio"] == pytest.approx(4.0) and only["verdict"] == "slower" and "cache" not in only


def test_plain_tuples_still_mean_throughput_only_without_a_cache_label():
    (c,) = metrics.summarize(_two_servers(0.1, 0.4), comparisons=[("*", "ours", "peer")])["comparisons"]
    assert c["metric"] == "output_tok_per_s" and "cache" not in c


def test_comparison_rejects_unknown_metrics_and_labels():
    with pytest.raises(ValueError, match="ttft_median"):
        Comparison("*", "a", "b", ("ttft_median",))
    with pytest.raises(ValueError, match="lukewarm"):
        Comparison("*", "a", "b", cache="lukewarm")


def test_prompt_cache_share_only_where_the_server_reports_it():
    recs = _two_servers(0.1, 0.2)
    for r in recs:
        if r["type"] == "request" and r["server"] == "ours":
            r.update(prompt_tokens=100, cached_tokens=75, conversation=0, turn=r["repeat"] % 2)
    recs.append({**request("ours", "agent", 0, 1, status="error", error="x"), "cached_tokens": 100})  # not ok
    s = metrics.summarize(recs)
    ours, peer = s["groups"]
    assert ours["prompt_cache"] == {"requests": 4, "cached_tokens": 300, "prompt_tokens": 400, "fraction": 0.75}
    assert "prompt_cache" not in peer


def test_new_fields_satisfy_the_schemas_and_show_in_the_console():
    recs = _two_servers(0.1, 0.4)
    recs[0].update(cached_tokens=5, conversation=0, turn=1)
    s = metrics.summarize(recs, comparisons=[Comparison("*", "ours", "peer", ("output_tok_per_s", "ttft_p50_s"),
                                                        "warm-vs-cold")])
    summary = {"run_id": evidence.new_run_id("throughput"), **s, "validation": None}
    for name, doc in (("summary", summary), *(("raw_record", r) for r in recs)):
        schema = json.loads((evidence.SCHEMA_DIR / f"{name}.schema.json").read_text())
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    manifest_schema = json.loads((evidence.SCHEMA_DIR / "manifest.schema.json").read_text())
    server_schema = {**manifest_schema["properties"]["servers"]["items"], "$defs": manifest_schema["$defs"]}
    jsonschema.validate(_entry("ours", "mlx-proof", "off"), server_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_entry("ours", "mlx-proof", "lukewarm"), server_schema)

    out = io.StringIO()
    print_summary(summary, [_entry("ours", "mlx-proof", "on"), _entry("peer", "mlx-lm", "off")],
                  console=Console(file=out, width=200))
    text = out.getvalue()
    assert "warm-vs-cold" in text and "TTFT p50" in text and "ours / peer" in text and "faster" in text
    assert "50%" in text  # ours' cached prompt share: 5 of the 10 prompt tokens of the one request that said
