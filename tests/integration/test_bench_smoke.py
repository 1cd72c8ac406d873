"""A tiny real bench end to end: our server and mlx_lm.server on the real default model,
real HTTP streams, evidence that validates, a report, and numbers that recompute from raw."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from harness.evidence import iter_runs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    argv = [sys.executable, "-m", "harness", "bench", "--cases", "smoke,multiturn-ci", "--repeats", "1", "--warmup", "1",
            "--peers", "mlx-lm", "--evidence-dir", str(root / "evidence"), "--reports-dir", str(root / "reports"),
            "--log-dir", str(root / "logs")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = list(iter_runs(root / "evidence"))  # read_run validates against the schemas
    assert len(runs) == 1
    return root, runs[0]


def test_manifest_records_the_environment(bench_run):
    _, run = bench_run
    m = run.manifest
    assert m["model"]["id"] == "smollm2-135m" and len(m["model"]["weights_sha256"]) == 64
    assert m["engine_mode"] == "continuous-batching"
    assert {s["label"]: s["status"] for s in m["servers"]} == {"ours": "ran", "mlx-lm": "ran"}
    assert m["profile"]["flags"]["max_concurrency"] >= 1
    assert m["git"]["commit"]


def test_every_request_succeeded_and_is_recorded(bench_run):
    _, run = bench_run
    requests = [r for r in run.records if r["type"] == "request"]
    assert len(requests) == 2 * (3 + 2)  # two servers, three requests + a two-turn chat; warm-up not recorded
    assert all(r["status"] == "ok" and r["completion_tokens"] > 0 for r in requests)


def test_second_turn_reuses_the_first_from_the_prefix_cache(bench_run):
    _, run = bench_run
    turns = {r["turn"]: r for r in run.records
             if r["type"] == "request" and r["server"] == "ours" and r["case"] == "multiturn-ci"}
    assert turns[1]["cached_tokens"] > turns[0]["prompt_tokens"] // 2


def test_summary_recomputes_from_raw(bench_run):
    _, run = bench_run
    raw = pd.DataFrame(list(run.records))
    ok = raw[(raw.type == "request") & (raw.status == "ok")]
    tokens = ok.groupby(["server", "case", "repeat"]).completion_tokens.sum()
    wall = raw[raw.type == "run"].set_index(["server", "case", "repeat"]).wall_s
    medians = (tokens / wall).groupby(level=[0, 1]).median()
    for group in run.summary["groups"]:
        stored = group["metrics"]["output_tok_per_s"]["median"]
        assert medians[(group["server"], group["case"])] == pytest.approx(stored, rel=1e-9)


def test_report_is_rendered(bench_run):
    root, run = bench_run
    html = (root / "reports" / "index.html").read_text()
    assert run.manifest["run_id"] in html and "mlx-lm" in html
    assert (root / "reports" / "summary.md").exists()
