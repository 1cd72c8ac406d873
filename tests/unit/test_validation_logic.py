"""The regression rule and the A/A / planted-slowdown bookkeeping, on synthetic records."""

import json

import jsonschema
import numpy as np
import pytest
from harness.commands import validation_block
from harness.evidence import SCHEMA_DIR


def synthetic(trials: int, pairs: int, *, slowdown: float, noise: float, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for repeat in range(trials * pairs):
        drift = 1 + 0.2 * np.sin(repeat / 7)  # slow drift shared by servers run side by side
        for server, factor in (("A", 1.0), ("A2", 1.0), ("planted", 1 - slowdown)):
            wall = 10.0 / (drift * factor * rng.lognormal(0, noise))
            records.append({"type": "request", "server": server, "case": "v", "repeat": repeat, "index": 0,
                            "concurrency": 1, "rate_rps": None, "start_s": 0.0, "ttft_s": 0.1,
                            "itl_s": [0.1], "e2e_s": wall, "prompt_tokens": 5, "completion_tokens": 100,
                            "finish_reason": "length", "status": "ok", "error": None})
            records.append({"type": "run", "server": server, "case": "v", "repeat": repeat,
                            "wall_s": wall, "peak_rss_mb": 1.0})
    return records


def test_planted_slowdown_is_caught_and_aa_is_quiet():
    block = validation_block(synthetic(40, 6, slowdown=0.10, noise=0.02), pairs_per_trial=6,
                             slowdown=0.10, threshold=0.05)
    assert block["aa_trials"] == block["planted_trials"] == 40
    assert block["pairs_per_trial"] == 6
    assert block["power"] >= 0.95
    assert block["false_positive_rate"] <= 0.10
    lo, hi = block["fpr_ci"]
    assert lo <= block["false_positive_rate"] <= hi
    # The plant's real cost is read from all 240 pairs: 10% slower, tightly.
    realised = block["planted_ratio"]
    assert realised["n_pairs"] == 240
    assert realised["ci_low"] < 0.90 < realised["ci_high"]


def test_threshold_only_removes_flags():
    """Counting at threshold 0 is the bare significance test: never fewer flags than the gate."""
    block = validation_block(synthetic(30, 6, slowdown=0.03, noise=0.03, seed=5), pairs_per_trial=6,
                             slowdown=0.03, threshold=0.05)
    assert block["planted_significant"] >= block["planted_flagged"]
    assert block["aa_significant"] >= block["aa_flagged"]
    # A 3% slowdown is below the 5% threshold: significant often, flagged rarely.
    assert block["planted_significant"] > block["planted_flagged"]


def test_calibrate_rejects_trials_that_cannot_balance_server_order(capsys):
    from harness.cli import main
    assert main(["calibrate", "--repeats", "5", "--trials", "1"]) == 2
    assert "multiple of 6" in capsys.readouterr().out


def test_no_planted_effect_means_no_power():
    block = validation_block(synthetic(20, 6, slowdown=0.0, noise=0.02, seed=3), pairs_per_trial=6,
                             slowdown=0.0, threshold=0.0)
    assert block["power"] <= 0.2


def test_validation_block_matches_the_summary_schema():
    schema = json.loads((SCHEMA_DIR / "summary.schema.json").read_text())
    block = validation_block(synthetic(4, 6, slowdown=0.10, noise=0.02), pairs_per_trial=6,
                             slowdown=0.10, threshold=0.05)
    summary = {"schema_version": 1, "run_id": "20261125T000000Z-validate-abcdef", "groups": [],
               "comparisons": [], "validation": block}
    jsonschema.validate(summary, schema)
    block["planted_ratio"]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(summary, schema)


def test_each_trial_reports_the_most_load_outside_the_run_without_changing_the_decision():
    records = synthetic(3, 6, slowdown=0.10, noise=0.02)
    bare = validation_block(records, pairs_per_trial=6, slowdown=0.10, threshold=0.05)
    assert "trial_foreign_cpu_max" not in bare  # runs recorded before harness 0.9.0
    loads = {0: 0.01, 7: 0.30, 8: 0.02}  # repeat -> foreign_cpu; repeat 7 is in trial 1
    loaded = [{**r, "foreign_cpu": loads.get(r["repeat"], 0.0) if r["repeat"] < 12 else None}
              if r["type"] == "run" else r for r in records]
    block = validation_block(loaded, pairs_per_trial=6, slowdown=0.10, threshold=0.05)
    assert block["trial_foreign_cpu_max"] == [0.01, 0.30, None]
    assert {k: v for k, v in block.items() if k != "trial_foreign_cpu_max"} == bare
    schema = json.loads((SCHEMA_DIR / "summary.schema.json").read_text())
    jsonschema.validate({"schema_version": 1, "run_id": "20261125T000000Z-calibrate-abcdef", "groups": [],
                         "comparisons": [], "validation": block}, schema)


def _decode_plant(records: list[dict], *, slowdown: float, noise: float = 0.01, seed: int = 9) -> list[dict]:
    """The plant lengthens every inter-token gap while each repeat's wall time stays as it was:
    what a decode-only regression hidden by TTFT noise looks like to the two metrics."""
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        if r["type"] == "request":
            gap = 0.1 * rng.lognormal(0, noise) / (1 - slowdown if r["server"] == "planted" else 1)
            r = {**r, "itl_s": [gap] * 9}
        out.append(r)
    return out


def test_the_rule_can_decide_on_the_median_inter_token_gap_read_as_a_rate():
    records = _decode_plant(synthetic(12, 6, slowdown=0.0, noise=0.002), slowdown=0.06)
    on_tps = validation_block(records, pairs_per_trial=6, slowdown=0.07, threshold=0.025)
    on_itl = validation_block(records, pairs_per_trial=6, slowdown=0.07, threshold=0.025, metric="itl_p50_s")
    assert on_tps["planted_flagged"] == 0 and "metric" not in on_tps  # wall times carry no plant
    assert on_itl["metric"] == "itl_p50_s" and on_itl["planted_flagged"] == 12 and on_itl["aa_flagged"] == 0
    # Ratios of speeds: 6% longer gaps read as planted/A = 0.94, i.e. a cost of 6%.
    assert on_itl["planted_ratio"]["ratio"] == pytest.approx(0.94, abs=0.01)
    schema = json.loads((SCHEMA_DIR / "summary.schema.json").read_text())
    jsonschema.validate({"schema_version": 1, "run_id": "20261125T000000Z-calibrate-abcdef", "groups": [],
                         "comparisons": [], "validation": on_itl}, schema)


@pytest.mark.parametrize("ratio, ci, flagged", [
    (1.062, (1.050, 1.074), True),    # gaps 6% longer, surely: a regression
    (1.020, (1.005, 1.035), False),   # surely longer, but by less than the 2.5% threshold
    (1.040, (0.990, 1.093), False),   # not surely longer
    (0.940, (0.930, 0.950), False),   # shorter gaps: faster
])
def test_a_time_ratio_is_judged_as_the_ratio_of_rates(ratio, ci, flagged):
    from harness.metrics import is_regression
    comparison = {"metric": "itl_p50_s", "ratio": ratio, "ci_low": ci[0], "ci_high": ci[1]}
    assert is_regression(comparison, threshold=0.025) is flagged
    as_rate = {"metric": "output_tok_per_s", "ratio": 1 / ratio, "ci_low": 1 / ci[1], "ci_high": 1 / ci[0]}
    assert is_regression(as_rate, threshold=0.025) is flagged
