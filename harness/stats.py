"""Statistics for benchmark evidence: every distribution comes from scipy.

Conventions shared by all functions here:
- The point estimate of a metric is its median; its interval is the Student-t
  interval on the mean. The two answer different questions on purpose: the
  median resists one slow repeat, the t interval says how well the repeats
  pin the typical value down.
- Server comparisons are ratios a/b of a metric over paired repeats. Ratios
  are analysed on the log scale so that "10% faster" and "10% slower" are
  symmetric and swapping a and b inverts the answer exactly.
- Degenerate inputs (one value, identical values) give collapsed or missing
  intervals, never NaN: NaN cannot be written to JSON evidence.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

T_METHOD = "t interval on the mean"
PAIRED_METHOD = "t on paired log-ratios"
PAIRED_TEST = "one-sample t-test on log-ratios, H0: ratio = 1"
BOOTSTRAP_METHOD = "bootstrap (BCa or percentile), ratio of medians"
BOOTSTRAP_MEAN_METHOD = "bootstrap of the mean (BCa, percentile where BCa is undefined)"

VERDICTS = ("faster", "slower", "no detectable difference")


def _finite_array(values: Sequence[float], *, name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite numbers")
    return x


def _t_interval(x: np.ndarray, *, confidence: float) -> tuple[float | None, float | None]:
    """t interval on the mean; None for one value, collapsed for identical values.

    Identical values are tested with ptp, not sem == 0: the floating mean of
    identical values is not always exactly that value, so sem can be 1e-17.
    """
    if x.size < 2:
        return None, None
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    low, high = stats.t.interval(confidence, x.size - 1, loc=np.mean(x), scale=stats.sem(x))
    return float(low), float(high)


def describe(values: Sequence[float], *, confidence: float = 0.95) -> dict:
    """Median point estimate plus a t interval on the mean of the repeats."""
    x = _finite_array(values)
    low, high = _t_interval(x, confidence=confidence)
    return {
        "n": int(x.size),
        "median": float(np.median(x)),
        "mean": float(np.mean(x)),
        "ci_low": low,
        "ci_high": high,
        "confidence": confidence,
        "method": T_METHOD,
    }


def percentile_summary(values: Sequence[float], *, prefix: str) -> dict:
    """Mean and p50/p95/p99 (numpy's linear interpolation); all None when empty."""
    keys = [f"{prefix}_mean_s", f"{prefix}_p50_s", f"{prefix}_p95_s", f"{prefix}_p99_s"]
    if len(values) == 0:
        return dict.fromkeys(keys)
    x = _finite_array(values)
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return dict(zip(keys, (float(np.mean(x)), float(p50), float(p95), float(p99))))


def _positive(values: Sequence[float], *, name: str) -> np.ndarray:
    x = _finite_array(values, name=name)
    if np.any(x <= 0):
        raise ValueError(f"{name}: ratios need strictly positive values")
    return x


def paired_ratio(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> dict:
    """Ratio a/b of a metric over paired repeats (a_i ran alongside b_i).

    The ratio is the geometric mean of a_i/b_i. p_value is None when the
    t-test is undefined (all log-ratios identical); the interval then
    collapses onto the ratio. wilcoxon_p is a rank-based cross-check that
    only exists from 6 pairs, below which it cannot reach p < 0.05.
    """
    x, y = _positive(a, name="a"), _positive(b, name="b")
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    if x.size < 2:
        raise ValueError("a paired ratio needs at least 2 pairs")
    logs = np.log(x / y)
    log_low, log_high = _t_interval(logs, confidence=confidence)
    if np.ptp(logs) == 0:
        p_value = None
    else:
        p_value = float(stats.ttest_1samp(logs, 0.0).pvalue)
    result = {
        "ratio": float(np.exp(np.mean(logs))),
        "ci_low": float(np.exp(log_low)),
        "ci_high": float(np.exp(log_high)),
        "confidence": confidence,
        "method": PAIRED_METHOD,
        "p_value": p_value,
        "test": PAIRED_TEST,
        "n_pairs": int(x.size),
    }
    if x.size >= 6:
        result["wilcoxon_p"] = _wilcoxon_p(logs)
    return result


def _wilcoxon_p(logs: np.ndarray) -> float | None:
    # All-zero differences make scipy divide by zero; the test is undefined then.
    if np.all(logs == 0):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.wilcoxon(logs).pvalue)
    return p if math.isfinite(p) else None


def _ratio_of_medians(x, y, axis=-1):
    return np.median(x, axis=axis) / np.median(y, axis=axis)


def bootstrap_ratio_of_medians(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95,
                               n_resamples: int = 9999, seed: int = 0) -> dict:
    """Ratio of medians of two unpaired samples, with a bootstrap interval.

    BCa is tried first; it is undefined for degenerate resamples (e.g. all
    values equal), and then the percentile interval is reported instead.
    "interval" names which one was used.
    """
    x, y = _positive(a, name="a"), _positive(b, name="b")
    result = None
    for interval in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # Degenerate-data warnings are exactly what the fallback handles.
            warnings.simplefilter("ignore")
            result = stats.bootstrap((x, y), _ratio_of_medians, n_resamples=n_resamples,
                                     vectorized=True, paired=False, confidence_level=confidence,
                                     method=interval, rng=np.random.default_rng(seed))
        low, high = result.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            break
    else:
        raise ValueError("bootstrap interval is undefined for these samples")
    return {
        "ratio": float(_ratio_of_medians(x, y)),
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "method": BOOTSTRAP_METHOD,
        "interval": interval,
        "n_a": int(x.size),
        "n_b": int(y.size),
        "n_resamples": n_resamples,
    }


def bootstrap_mean(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 9999,
                   seed: int = 0) -> dict:
    """Mean with a bootstrap interval (seeded, so a summary recomputes exactly).

    One value has no interval (None); identical values collapse it onto the value,
    where BCa is undefined. "interval" names the method used.
    """
    x = _finite_array(values)
    out = {"n": int(x.size), "mean": float(np.mean(x)), "ci_low": None, "ci_high": None,
           "confidence": confidence, "method": BOOTSTRAP_MEAN_METHOD, "interval": None}
    if x.size < 2:
        return out
    if np.ptp(x) == 0:
        return {**out, "ci_low": float(x[0]), "ci_high": float(x[0]), "interval": "collapsed"}
    for interval in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate resamples: the fallback handles them
            result = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                     method=interval, rng=np.random.default_rng(seed))
        low, high = result.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            # Clip to the data's range: a mean cannot leave it, BCa's tail correction can.
            return {**out, "ci_low": float(max(low, x.min())), "ci_high": float(min(high, x.max())),
                    "interval": interval}
    raise ValueError("bootstrap interval is undefined for these values")


def verdict(ci_low: float | None, ci_high: float | None, *, higher_is_better: bool = True,
            threshold: float = 0.0) -> str:
    """Read a ratio interval a/b: only a whole interval beyond 1±threshold counts.

    "faster" means a is better than b. For latency-like metrics (lower is
    better) pass higher_is_better=False and a ratio above 1 reads "slower".
    A missing interval is never a difference.
    """
    if ci_low is None or ci_high is None:
        return "no detectable difference"
    above, below = ci_low > 1 + threshold, ci_high < 1 - threshold
    if not higher_is_better:
        above, below = below, above
    if above:
        return "faster"
    if below:
        return "slower"
    return "no detectable difference"


def regression_flag(ratio: float, ci_high: float | None, *, threshold: float) -> bool:
    """Flag a regression of candidate/baseline throughput.

    Rule: flagged if and only if the ratio is significantly below 1 (the whole
    interval is below 1) and materially so (the point estimate is more than
    `threshold` below 1). A CI alone would flag trivial slowdowns on a long
    enough run; a threshold alone would flag noise. A missing interval (too
    few pairs) is never flagged.
    """
    if ci_high is None:
        return False
    return ci_high < 1.0 and ratio < 1.0 - threshold


def wilson(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (no continuity correction) for successes out of n."""
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
