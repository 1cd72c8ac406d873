"""The bench's two figures: engine against engine (a peer given our BLAS) and as shipped (a peer
without it), set up explicitly, recorded per server in the manifest, and labelled in the summary
and the report."""

from __future__ import annotations

import contextlib
import os

import jsonschema
import pytest

from harness import evidence, servers
from harness.report import render
from harness.servers import ModelFolder, ServerSpec, blas_preload, parse_server_list
from suites.throughput.comparisons import bench_comparisons

MODEL = ModelFolder("smollm2-135m", "/m", "0" * 64, "catalog", "float32")
SHIM = "/c/blas-shim/x/libmlxproof_cblas.so"


def test_as_shipped_peers_are_the_same_kind_without_our_blas():
    specs = parse_server_list("mlx-lm,mlx-lm-as-shipped,vllm-mlx-as-shipped,ours-nocache")
    assert [(s.label, s.kind, s.blas_setup) for s in specs] == [
        ("mlx-lm", "mlx-lm", "same-as-ours"), ("mlx-lm-as-shipped", "mlx-lm", "as-shipped"),
        ("vllm-mlx-as-shipped", "vllm-mlx", "as-shipped"), ("ours-nocache", "mlx-proof", "own")]
    with pytest.raises(ValueError, match="mlx-lm-as-shipped"):
        parse_server_list("ours-as-shipped")


def _launch_env(monkeypatch, tmp_path, spec: ServerSpec, preload: str | None) -> tuple[dict, servers.Target]:
    seen = {}

    @contextlib.contextmanager
    def launched(argv, *, env, **_):
        seen.update(env)
        yield servers.RunningServer("http://127.0.0.1:1", os.getpid(), tmp_path / "log")

    monkeypatch.setattr(servers, "launched", launched)
    monkeypatch.setenv("LD_PRELOAD", "/from/the/harness/own/env.so")
    with servers.launch(spec, model=MODEL, profile="p", log_dir=tmp_path, preload=preload) as target:
        return seen, target


def test_engine_vs_engine_peer_gets_our_preload(monkeypatch, tmp_path):
    env, target = _launch_env(monkeypatch, tmp_path, ServerSpec("mlx-lm", "mlx-lm"), SHIM)
    assert env["LD_PRELOAD"] == SHIM and target.ld_preload == SHIM


def test_as_shipped_peer_and_ours_get_no_preload(monkeypatch, tmp_path):
    for spec in (ServerSpec("mlx-lm-as-shipped", "mlx-lm", blas="as-shipped"), ServerSpec("ours", "mlx-proof")):
        env, target = _launch_env(monkeypatch, tmp_path, spec, SHIM)
        assert "LD_PRELOAD" not in env and target.ld_preload is None


def test_manifest_entry_names_what_the_process_mapped(monkeypatch, tmp_path):
    _, target = _launch_env(monkeypatch, tmp_path, ServerSpec("mlx-lm", "mlx-lm"), SHIM)
    monkeypatch.setattr(servers, "process_blas", lambda pid: f"mapped by {pid}")
    assert servers.blas_entry(target) == {"setup": "same-as-ours", "ld_preload": SHIM,
                                          "loaded": f"mapped by {os.getpid()}"}


def test_process_blas_reads_a_real_process():
    assert servers.process_blas(os.getpid()) != "unknown"
    assert servers.process_blas(2**22 + 12345) == "unknown"  # no such process


def test_peers_get_the_preload_ours_reports():
    assert blas_preload({"backend": {"blas": "openblas-shim (x; y)", "blas_preload": SHIM}}) == SHIM
    assert blas_preload({"backend": {"blas": "reference-netlib", "blas_preload": None}}) is None
    # a revision from before blas_preload existed: the system OpenBLAS named in the blas string
    assert blas_preload({"backend": {"blas": "openblas (/usr/lib/libopenblas.so.0)"}}) == "/usr/lib/libopenblas.so.0"


def _entry(label, kind, setup, cache="on"):
    return {"label": label, "kind": kind, "revision": None, "argv": [], "status": "ran", "reason": None,
            "health": None, "prefix_cache": cache, "blas": {"setup": setup, "ld_preload": None, "loaded": "x"}}


def test_comparisons_are_labelled_by_figure():
    ran = [_entry("ours", "mlx-proof", "own"), _entry("mlx-lm", "mlx-lm", "same-as-ours"),
           _entry("mlx-lm-as-shipped", "mlx-lm", "as-shipped")]
    got = {(c.a, c.b): c.setup for c in bench_comparisons(ran)}
    assert got == {("ours", "mlx-lm"): "engine-vs-engine", ("ours", "mlx-lm-as-shipped"): "as-shipped"}
    old = [{k: v for k, v in e.items() if k != "blas"} for e in ran[:2]]  # manifests before harness 0.7.0
    assert [c.setup for c in bench_comparisons(old)] == [None]


def test_schemas_take_the_new_fields():
    manifest_servers = evidence._validator("manifest").schema["properties"]["servers"]
    jsonschema.validate([_entry("mlx-lm", "mlx-lm", "same-as-ours")], manifest_servers)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([_entry("mlx-lm", "mlx-lm", "borrowed")], manifest_servers)
    summary = evidence._validator("summary").schema
    comparison = {"$defs": summary["$defs"], **summary["$defs"]["comparison"]}
    base = {"case": "c", "a": "ours", "b": "mlx-lm", "metric": "output_tok_per_s", "ratio": 1.2, "ci_low": 1.1,
            "ci_high": 1.3, "confidence": 0.95, "method": "m", "p_value": 0.01, "test": "t", "n_pairs": 3,
            "verdict": "faster"}
    jsonschema.validate({**base, "setup": "as-shipped"}, comparison)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**base, "setup": "same"}, comparison)


def test_report_labels_both_figures(tmp_path):
    from types import SimpleNamespace

    comp = {"case": "seed-c10", "a": "ours", "metric": "output_tok_per_s", "ratio": 2.0, "ci_low": 1.5,
            "ci_high": 2.5, "confidence": 0.95, "method": "m", "p_value": 0.01, "test": "t", "n_pairs": 3,
            "verdict": "faster", "cache": "warm"}
    run = SimpleNamespace(path=None, records=[], manifest={
        "run_id": "20261126T000000Z-throughput-abcdef", "suite": "throughput",
        "servers": [_entry("ours", "mlx-proof", "own"), _entry("mlx-lm-as-shipped", "mlx-lm", "as-shipped")]},
        summary={"groups": [], "comparisons": [{**comp, "b": "mlx-lm", "setup": "engine-vs-engine"},
                                               {**comp, "b": "mlx-lm-as-shipped", "setup": "as-shipped"}]})
    _, md = render([run], tmp_path)
    text = md.read_text()
    assert "| setup |" in text and "| engine-vs-engine |" in text and "| as-shipped |" in text
    assert "BLAS per server: ours: own, loaded x; mlx-lm-as-shipped: as-shipped, loaded x" in text
