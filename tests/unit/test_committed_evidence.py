"""Every committed run in evidence/ validates and its summary recomputes from its raw records.

This is the promise the README makes to readers: the published numbers are a
function of raw.jsonl, nothing else.
"""

from pathlib import Path

import pytest
from harness.calibrate import verdict as calibration_verdict
from harness.commands import validation_block
from harness.evidence import iter_runs
from harness.metrics import Comparison, decided_metric, summarize

EVIDENCE = Path(__file__).resolve().parents[2] / "evidence"
RUNS = list(iter_runs(EVIDENCE))  # read_run checks manifest, raw and summary against the schemas


def _rounded(value, digits: int = 12):
    """Recomputed floats may differ in the last bit across numpy/scipy builds."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def _pairs(summary: dict) -> list[Comparison]:
    """The comparisons the run asked for, rebuilt from the stored ones in their stored order:
    one per (a, b, cache label, setup label), with its metrics (older runs: output_tok_per_s, no label)."""
    asked: dict = {}
    for c in summary["comparisons"]:
        metrics = asked.setdefault((c["a"], c["b"], c.get("cache"), c.get("setup")), [])
        metrics += [c["metric"]] if c["metric"] not in metrics else []
    return [Comparison("*", a, b, tuple(metrics), cache, setup) for (a, b, cache, setup), metrics in asked.items()]


@pytest.mark.parametrize("run", RUNS, ids=[r.path.name for r in RUNS])
def test_summary_recomputes_from_raw(run):
    records = list(run.records)
    if run.manifest["suite"] == "tools":  # tool_case records: the summary's tools block
        from suites.tools.summary import summarize_tools
        assert _rounded(summarize_tools(records, confidence=run.summary["tools"]["confidence"])) == \
            _rounded(run.summary["tools"])
        assert run.summary["groups"] == [] and run.summary["comparisons"] == []
        return
    if run.manifest["suite"] == "contracts":  # contract_case records: the client x capability matrix
        from suites.contracts.summary import summarize_contracts
        assert summarize_contracts(records) == run.summary["contracts"]
        return
    if run.manifest["suite"] == "divergence":  # divergence records: agreement with the serial reference
        from suites.divergence.summary import summarize_divergence
        thresholds = {c["case"]: c["min_exact"] for c in run.summary["divergence"]["cells"]}
        assert _rounded(summarize_divergence(records, min_exact=thresholds)) == _rounded(run.summary["divergence"])
        assert run.summary["groups"] == [] and run.summary["comparisons"] == []
        return
    if run.manifest["suite"] == "profile":  # step_part / step_graph records: the step broken down
        from harness.profile_summary import summarize_profile
        assert _rounded(summarize_profile(records, confidence=run.summary["profile"]["confidence"])) == \
            _rounded(run.summary["profile"])
        assert run.summary["groups"] == [] and run.summary["comparisons"] == []
        return
    recomputed = summarize(records, comparisons=_pairs(run.summary))
    assert _rounded(recomputed["groups"]) == _rounded(run.summary["groups"])
    assert _rounded(recomputed["comparisons"]) == _rounded(run.summary["comparisons"])
    validation = run.summary["validation"]
    if validation and "pairs_per_trial" in validation:  # older blocks did not record their trial size
        block = validation_block(records, pairs_per_trial=validation["pairs_per_trial"],
                                 slowdown=validation["planted_slowdown"], threshold=validation["threshold"],
                                 metric=decided_metric(validation))
        if "verdict" in validation:  # calibrate (harness 0.7.0+) decides on the bounds
            block["verdict"] = calibration_verdict(block, quick=validation["verdict"]["quick"])
        if "pooled_from" in validation:  # calibrate --pool: which runs' records these are (provenance)
            block["pooled_from"] = validation["pooled_from"]
        assert _rounded(block) == _rounded(validation)


def test_there_is_committed_evidence():
    assert {r.manifest["suite"] for r in RUNS} >= {"throughput", "validate"}
