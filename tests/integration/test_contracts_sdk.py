"""The contracts suite's SDK tier, for real: our server on the default model with an API key,
behind the recording proxy, driven by the openai, anthropic, litellm, langchain-openai and llm
clients as their users drive them. Evidence must validate and recompute, the matrix must have no
failing cell, and every response must have passed the SDK-type conformance check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.evidence import iter_runs
from suites.contracts.summary import summarize_contracts

pytestmark = pytest.mark.integration
SDK_CLIENTS = {"openai-python", "openai-python-async", "anthropic-python", "litellm-openai", "litellm-anthropic",
               "langchain-openai", "llm-cli"}


@pytest.fixture(scope="module")
def contracts_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("contracts")
    done = subprocess.run([sys.executable, "-m", "harness", "contracts", "--tiers", "sdk", "--models", "default",
                           "--evidence-dir", str(root / "evidence"), "--reports-dir", str(root / "reports")],
                          capture_output=True, text=True, timeout=1800)
    runs = list(iter_runs(root / "evidence"))
    assert len(runs) == 1, done.stdout[-3000:] + done.stderr[-3000:]
    return runs[0], done, root


def test_every_sdk_client_ran_and_no_cell_fails(contracts_run):
    run, done, _ = contracts_run
    block = run.summary["contracts"]
    assert set(block["clients"]) == SDK_CLIENTS
    failing = [c for c in block["cells"] if c["status"] in ("fail", "blocked")]
    assert not failing, json.dumps(failing, indent=1)
    assert done.returncode == 0, done.stdout[-3000:]


def test_every_response_was_checked_against_the_sdk_types(contracts_run):
    run, _, _ = contracts_run
    cases = [r for r in run.records if r["type"] == "contract_case"]
    assert sum(r["conformance"]["checked"] for r in cases) >= len(cases)
    assert all(not r["conformance"]["failures"] for r in cases)
    # what each client sent is recorded, with secrets redacted
    sent = [q for r in cases for q in r["requests"]]
    assert sent and all("<redacted>" == q["headers"].get("authorization", "<redacted>") for q in sent)
    assert all("sk-contracts" not in json.dumps(q) for q in sent)


def test_summary_recomputes_and_the_report_shows_the_matrix(contracts_run):
    run, _, root = contracts_run
    assert summarize_contracts(list(run.records)) == run.summary["contracts"]
    md = (root / "reports" / "summary.md").read_text()
    assert "Client contracts:" in md and "openai-python" in md
