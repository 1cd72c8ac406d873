"""calibrate decides on Wilson bounds: 73 clean trials prove 5%, fewer never do, --quick never passes."""

import pytest
from harness import calibrate as bounds
from harness.commands import validation_block
from harness.stats import wilson

from tests.unit.test_validation_logic import synthetic


def block(aa_flagged: int, caught: int, n: int, *, cost: float = 0.055) -> dict:
    return {"aa_trials": n, "aa_flagged": aa_flagged, "false_positive_rate": aa_flagged / n,
            "fpr_ci": list(wilson(aa_flagged, n)), "planted_trials": n, "planted_flagged": caught,
            "power": caught / n, "power_ci": list(wilson(caught, n)),
            "planted_ratio": {"ratio": 1 - cost, "ci_low": 1 - cost - 0.01, "ci_high": 1 - cost + 0.01, "n_pairs": n}}


def test_73_clean_trials_are_the_fewest_that_prove_5_percent():
    assert bounds.MIN_TRIALS == 73
    assert wilson(0, 73)[1] <= 0.05 < wilson(0, 72)[1]
    assert wilson(73, 73)[0] >= 0.95 > wilson(72, 72)[0]


def test_a_clean_full_run_is_proven():
    decided = bounds.verdict(block(0, 73, 73), quick=False)
    assert decided["status"] == bounds.PROVEN and decided["reasons"] == []
    assert bounds.EXIT_CODES[decided["status"]] == 0


def test_quick_is_never_proven():
    decided = bounds.verdict(block(0, 73, 73), quick=True)
    assert decided["status"] == bounds.NOT_PROVEN and any("--quick" in r for r in decided["reasons"])
    assert bounds.EXIT_CODES[bounds.NOT_PROVEN] == 3


@pytest.mark.parametrize("aa, caught, n, needle", [
    (0, 20, 20, "zero flags need at least 73 trials"),    # the old default: fine rates, wide intervals
    (1, 73, 73, "Wilson upper bound"),                    # one false positive in 73 cannot prove 5%
    (0, 72, 73, "Wilson lower bound"),                    # one miss in 73 cannot prove 95%
])
def test_good_rates_with_wide_intervals_are_not_proven(aa, caught, n, needle):
    decided = bounds.verdict(block(aa, caught, n), quick=False)
    assert decided["status"] == bounds.NOT_PROVEN
    assert any(needle in r for r in decided["reasons"])


@pytest.mark.parametrize("cost", [0.02, 0.081, None])
def test_a_plant_that_did_not_cost_about_5_percent_proves_nothing(cost):
    b = block(0, 73, 73, cost=0.05)
    b["planted_ratio"]["ratio"] = None if cost is None else 1 - cost
    decided = bounds.verdict(b, quick=False)
    assert decided["status"] == bounds.NOT_PROVEN and any("really cost" in r for r in decided["reasons"])


def test_intervals_wholly_beyond_a_bound_disprove():
    assert bounds.verdict(block(20, 73, 73), quick=False)["status"] == bounds.DISPROVEN
    assert bounds.verdict(block(0, 40, 73), quick=True)["status"] == bounds.DISPROVEN
    assert bounds.EXIT_CODES[bounds.DISPROVEN] == 1


def test_the_verdict_of_synthetic_trials():
    """A 5.5% plant against 2% noise, 12 pairs a trial, the 2.5% rule: every plant caught, no A/A flag."""
    records = synthetic(bounds.MIN_TRIALS, 12, slowdown=0.055, noise=0.02, seed=11)
    b = validation_block(records, pairs_per_trial=12, slowdown=0.07, threshold=0.025)
    assert (b["aa_flagged"], b["planted_flagged"]) == (0, bounds.MIN_TRIALS)
    assert bounds.verdict(b, quick=False)["status"] == bounds.PROVEN
