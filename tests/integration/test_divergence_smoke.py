"""The divergence suite for real: our server on the default model, three short prompts, batches of 2,
one run. Checks the evidence's shape (token ids through the API, the comparisons, the summary) and
that serial decoding repeated on one server gives the same ids."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from harness.evidence import iter_runs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def divergence_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("divergence")
    argv = [sys.executable, "-m", "harness", "bench", "--suite", "divergence", "--cases", "smoke", "--limit", "3",
            "--concurrency", "2", "--runs", "1", "--warmup", "1", "--evidence-dir", str(root / "evidence"),
            "--reports-dir", str(root / "reports"), "--log-dir", str(root / "logs")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = iter_runs(root / "evidence")  # read_run validates against the schemas
    return root, run


def test_manifest_names_the_suite_and_the_server_it_ran(divergence_run):
    _, run = divergence_run
    m = run.manifest
    assert m["suite"] == "divergence" and m["model"]["id"] == "smollm2-135m"
    (server,) = m["servers"]
    assert server["label"] == "ours" and server["status"] == "ran"
    assert "--prefix-cache-bytes" in server["argv"]  # no cache hit mixes into the comparison
    (case,) = m["workload"]["cases"]
    assert case["prompts"] == ["short-01", "short-02", "short-03"] and case["concurrency"] == [2]


def test_every_generation_came_back_with_token_ids_and_logprobs(divergence_run):
    _, run = divergence_run
    records = list(run.records)
    assert Counter((r["condition"], r["batch_size"]) for r in records) == {
        ("reference", 1): 3, ("batch", 2): 3, ("control", 1): 3}
    for r in records:
        assert r["status"] == "ok", r["error"]
        assert r["token_ids"] and len(r["logprobs"]) == len(r["token_ids"]) == len(r["margins"])
        assert all(m is None or m >= 0 for m in r["margins"])
    batched = [r for r in records if r["condition"] == "batch"]
    assert all(len(r["distractors"]) == 1 and r["distractor_errors"] == 0 for r in batched)


def test_comparisons_and_summary(divergence_run):
    _, run = divergence_run
    for r in run.records:
        if r["condition"] == "reference":
            assert r["match"] is None
        else:
            m = r["match"]
            assert m["reference_length"] > 0 and 0 <= m["agreement"] <= 1
            assert m["exact"] == (m["first_divergence"] is None)
    # The same prompt alone twice on one CPU server: the same ids (the noise floor is zero here).
    assert all(r["match"]["exact"] for r in run.records if r["condition"] == "control")
    control, batch = run.summary["divergence"]["cells"]
    assert (control["condition"], batch["condition"], batch["batch_size"]) == ("control", "batch", 2)
    for cell in (control, batch):
        assert cell["n_prompts"] == 3 and cell["n_runs"] == 1 and cell["comparisons"] == 3 and cell["errors"] == 0
        assert cell["exact"]["ci_low"] is not None and cell["per_run"]["agreement_ci"]["ci_low"] is None  # one run
        assert cell["verdict"] in ("inconclusive", "fails")  # 3 prompts never meet 0.9: Wilson lower <= 0.44


def test_report_has_the_divergence_section(divergence_run):
    root, run = divergence_run
    page = (root / "reports" / "index.html").read_text()
    assert run.manifest["run_id"] in page and "noise floor: serial vs serial" in page
