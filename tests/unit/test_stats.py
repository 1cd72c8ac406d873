import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import stats


def test_describe_matches_scipy_t_interval():
    values = [1, 2, 3, 4, 5]
    low, high = scipy.stats.t.interval(0.95, 4, loc=3, scale=scipy.stats.sem(values))
    d = stats.describe(values)
    assert d == {"n": 5, "median": 3.0, "mean": 3.0, "ci_low": pytest.approx(low), "ci_high": pytest.approx(high),
                 "confidence": 0.95, "method": "t interval on the mean"}
    assert d["ci_low"] == pytest.approx(1.0367568385224428)


def test_describe_point_estimate_is_median_not_mean():
    d = stats.describe([1.0, 1.0, 1.0, 10.0])
    assert d["median"] == 1.0 and d["mean"] == 3.25


def test_describe_degenerate_inputs():
    one = stats.describe([7.5])
    assert one["n"] == 1 and one["ci_low"] is None and one["ci_high"] is None
    flat = stats.describe([0.1, 0.1, 0.1])
    assert flat["ci_low"] == flat["ci_high"] == 0.1
    with pytest.raises(ValueError):
        stats.describe([])
    with pytest.raises(ValueError):
        stats.describe([1.0, float("nan")])


def test_describe_other_confidence():
    values = [2.0, 4.0, 9.0]
    low, high = scipy.stats.t.interval(0.9, 2, loc=5, scale=scipy.stats.sem(values))
    d = stats.describe(values, confidence=0.9)
    assert (d["ci_low"], d["ci_high"], d["confidence"]) == (pytest.approx(low), pytest.approx(high), 0.9)


def test_percentile_summary():
    values = list(range(1, 101))
    s = stats.percentile_summary(values, prefix="ttft")
    assert s == {"ttft_mean_s": 50.5, "ttft_p50_s": 50.5,
                 "ttft_p95_s": pytest.approx(np.percentile(values, 95)),
                 "ttft_p99_s": pytest.approx(np.percentile(values, 99))}
    assert stats.percentile_summary([], prefix="itl") == dict.fromkeys(
        ["itl_mean_s", "itl_p50_s", "itl_p95_s", "itl_p99_s"])


def test_wilson_textbook_values():
    low, high = stats.wilson(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=5e-4)
    # Closed form of the Wilson upper bound for 0 successes: z^2 / (n + z^2).
    z2 = scipy.stats.norm.ppf(0.975) ** 2
    assert high == pytest.approx(z2 / (20 + z2))
    low, high = stats.wilson(19, 20)
    assert low == pytest.approx(0.764, abs=1e-3) and high == pytest.approx(0.991, abs=1e-3)


BASE = [100.0, 103.0, 98.0, 101.0, 99.5, 102.0, 97.0, 100.5]


def test_paired_ratio_exact_ten_percent_slower():
    r = stats.paired_ratio([0.9 * x for x in BASE], BASE)
    assert r["ratio"] == pytest.approx(0.9)
    assert r["ci_low"] == pytest.approx(0.9, abs=1e-9) and r["ci_high"] == pytest.approx(0.9, abs=1e-9)
    assert r["n_pairs"] == 8 and r["method"] == "t on paired log-ratios"
    assert r["p_value"] is None or r["p_value"] < 1e-6
    assert "wilcoxon_p" in r  # n >= 6
    assert stats.verdict(r["ci_low"], r["ci_high"]) == "slower"


def test_paired_ratio_identical_data_is_no_difference():
    r = stats.paired_ratio(BASE, BASE)
    assert (r["ratio"], r["ci_low"], r["ci_high"]) == (1.0, 1.0, 1.0)
    assert r["p_value"] is None and r["wilcoxon_p"] is None
    assert stats.verdict(r["ci_low"], r["ci_high"]) == "no detectable difference"


def test_paired_ratio_matches_scipy_on_noisy_data():
    a, b = [10.0, 12.0, 11.0, 13.0], [10.5, 11.0, 11.5, 12.0]
    logs = np.log(np.divide(a, b))
    low, high = scipy.stats.t.interval(0.95, 3, loc=logs.mean(), scale=scipy.stats.sem(logs))
    r = stats.paired_ratio(a, b)
    assert r["ratio"] == pytest.approx(math.exp(logs.mean()))
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(math.exp(low)), pytest.approx(math.exp(high)))
    assert r["p_value"] == pytest.approx(scipy.stats.ttest_1samp(logs, 0).pvalue)
    assert "wilcoxon_p" not in r  # fewer than 6 pairs


def test_paired_ratio_rejects_bad_input():
    with pytest.raises(ValueError):
        stats.paired_ratio([1.0], [1.0])
    with pytest.raises(ValueError):
        stats.paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        stats.paired_ratio([1.0, 0.0], [1.0, 1.0])


def test_bootstrap_ratio_of_medians():
    rng = np.random.default_rng(1)
    a, b = rng.normal(90, 2, 15), rng.normal(100, 2, 15)
    r = stats.bootstrap_ratio_of_medians(a, b, n_resamples=999)
    assert r["ratio"] == pytest.approx(np.median(a) / np.median(b))
    assert r["ci_low"] < r["ratio"] < r["ci_high"] < 1
    assert r["method"] == "bootstrap (BCa or percentile), ratio of medians" and r["interval"] == "BCa"
    assert r == stats.bootstrap_ratio_of_medians(a, b, n_resamples=999)  # seeded: reproducible


def test_bootstrap_degenerate_falls_back_to_percentile():
    r = stats.bootstrap_ratio_of_medians([2.0, 2.0, 2.0], [4.0, 4.0, 4.0], n_resamples=199)
    assert r["interval"] == "percentile" and r["ci_low"] == r["ci_high"] == r["ratio"] == 0.5


@pytest.mark.parametrize("low, high, better, threshold, expected", [
    (1.01, 1.2, True, 0.0, "faster"),
    (0.8, 0.99, True, 0.0, "slower"),
    (0.9, 1.1, True, 0.0, "no detectable difference"),
    (1.01, 1.04, True, 0.05, "no detectable difference"),
    (1.06, 1.2, True, 0.05, "faster"),
    (1.01, 1.2, False, 0.0, "slower"),   # latency ratio above 1: a is slower
    (0.8, 0.99, False, 0.0, "faster"),
    (None, None, True, 0.0, "no detectable difference"),
])
def test_verdict(low, high, better, threshold, expected):
    assert stats.verdict(low, high, higher_is_better=better, threshold=threshold) == expected


def test_regression_flag_rule():
    assert stats.regression_flag(0.90, 0.95, threshold=0.05)  # significant and material
    assert not stats.regression_flag(0.97, 0.99, threshold=0.05)  # significant, within threshold
    assert not stats.regression_flag(0.90, 1.02, threshold=0.05)  # material, not significant
    assert not stats.regression_flag(0.95, 0.97, threshold=0.05)  # strict: on the boundary is not flagged
    assert stats.regression_flag(0.99, 0.995, threshold=0.0)
    assert not stats.regression_flag(0.9, None, threshold=0.0)


positive = st.floats(min_value=0.1, max_value=1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(positive, positive), min_size=2, max_size=7))
def test_paired_ratio_properties(pairs):
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    r, swapped = stats.paired_ratio(a, b), stats.paired_ratio(b, a)
    tol = 1e-9 * r["ratio"]
    assert r["ci_low"] - tol <= r["ratio"] <= r["ci_high"] + tol
    assert swapped["ratio"] == pytest.approx(1 / r["ratio"], rel=1e-9)
    assert swapped["ci_low"] == pytest.approx(1 / r["ci_high"], rel=1e-9)
    assert swapped["ci_high"] == pytest.approx(1 / r["ci_low"], rel=1e-9)
    if r["p_value"] is not None:
        assert swapped["p_value"] == pytest.approx(r["p_value"], rel=1e-6, abs=1e-12)
