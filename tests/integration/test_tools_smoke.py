"""A real slice of the tools suite for CI: BFCL cases (from the pinned wheel's data), our
server on the default model, real HTTP, evidence that validates and recomputes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.evidence import iter_runs
from suites.tools.summary import summarize_tools

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tools_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    argv = [sys.executable, "-m", "harness", "tools", "--model", "smollm2-135m", "--categories",
            "simple,irrelevance", "--limit", "2", "--modes", "auto,required",
            "--evidence-dir", str(root / "evidence"), "--reports-dir", str(root / "reports"),
            "--log-dir", str(root / "logs")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = list(iter_runs(root / "evidence"))  # read_run validates against the schemas
    return root, run


def test_every_case_ran_and_is_judged(tools_run):
    _, run = tools_run
    records = [r for r in run.records if r["type"] == "tool_case"]
    sent = [r for r in records if r["status"] != "not_applicable"]
    assert len(records) == 2 * 2 * 2 and len(sent) == 6  # irrelevance is not sent under "required"
    assert all(r["status"] == "ok" and r["correct"] is not None for r in sent)


def test_forced_calls_come_back_structured(tools_run):
    _, run = tools_run
    forced = [r for r in run.records if r["type"] == "tool_case" and r["mode"] == "required"
              and r["status"] == "ok"]
    # The grammar admits only calls; a call cut off by max_tokens is the one way out.
    assert all(r["tool_calls"] or r["finish_reason"] == "length" for r in forced)


def test_summary_recomputes_and_report_renders(tools_run):
    root, run = tools_run
    assert summarize_tools(run.records, confidence=run.summary["tools"]["confidence"]) == run.summary["tools"]
    assert "Parse fidelity" in (root / "reports" / "index.html").read_text()
