"""Raw records -> per-repeat metrics -> summary groups and comparisons.

Anyone can recompute the headline number (median output tokens/s per server
and case) from raw.jsonl with pandas alone, without this module; the unit
tests run exactly these lines and check them against ``summarize``:

>>> import pandas as pd
>>> df = pd.read_json(RAW_JSONL, lines=True, dtype=False)
>>> ok = df[(df.type == "request") & (df.status == "ok")]
>>> run = df[df.type == "run"].set_index(["server", "case", "repeat"])
>>> ok.groupby(["server", "case", "repeat"]).completion_tokens.sum().div(run.wall_s, fill_value=0).groupby(level=["server", "case"]).median()

(``dtype=False`` keeps labels such as case "1" as strings; ``fill_value=0``
makes a repeat whose requests all failed count as 0 tok/s, as here;
RAW_JSONL may name raw.jsonl.gz too.)

In comparisons a failed repeat counts against its server: a repeat with a request
that did not finish ok, or with no output token, or missing altogether, is never
dropped from the pair. The side with more failed repeats loses the comparison
whatever the ratio of the repeats that did run says (see `paired_comparison`).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import stats

THROUGHPUT = ("requests_per_s", "output_tok_per_s", "total_tok_per_s")
LATENCY_PREFIXES = ("ttft", "tpot", "itl", "e2e")
LOAD_METRICS = ("foreign_cpu", "steal_cpu")  # the machine's load outside the run (harness/machine_load.py)
METRIC_NAMES = (
    *THROUGHPUT,
    *(f"{p}_{s}_s" for p in LATENCY_PREFIXES for s in ("mean", "p50", "p95", "p99")),
    "peak_rss_mb", *LOAD_METRICS,
)
STATUSES = ("ok", "error", "incomplete")
COMPARED_METRIC = "output_tok_per_s"
# What compare, regress and calibrate decide on: the median gap between streamed tokens, per
# repeat. Over the 24 calibration trials at 5332d8f its per-pair log-ratio spread 3.1-3.5% against
# 5.0% for output tok/s (a repeat's wall time carries its TTFTs and HTTP setup too), so the
# same 18 pairs catch the plant with margin; README "Calibration" has the numbers.
DECISION_METRIC = "itl_p50_s"
CACHE_LABELS = ("warm", "cold", "warm-vs-cold", "cold-vs-warm", "unknown")
SETUP_LABELS = ("engine-vs-engine", "as-shipped")


def higher_is_better(metric: str) -> bool:
    """Throughput (per second) is better high; times (seconds) and memory are better low."""
    return metric.endswith("_per_s")


@dataclass(frozen=True)
class Comparison:
    """Which ratios a/b to compute: `case` "*" means every case both servers ran.

    `cache` labels the pair in the evidence (warm/warm, cold/cold, ...); None
    leaves the field out, as in runs written before it existed. `setup` says which figure a
    comparison with a peer is: engine-vs-engine (the peer given our BLAS) or as-shipped.
    """

    case: str
    a: str
    b: str
    metrics: tuple[str, ...] = (COMPARED_METRIC,)
    cache: str | None = None
    setup: str | None = None

    def __post_init__(self):
        unknown = [m for m in self.metrics if m not in METRIC_NAMES]
        if unknown or not self.metrics:
            raise ValueError(f"comparison metrics {unknown or '()'} unknown; known: {', '.join(METRIC_NAMES)}")
        if self.cache is not None and self.cache not in CACHE_LABELS:
            raise ValueError(f"cache label {self.cache!r} unknown; known: {', '.join(CACHE_LABELS)}")
        if self.setup is not None and self.setup not in SETUP_LABELS:
            raise ValueError(f"setup label {self.setup!r} unknown; known: {', '.join(SETUP_LABELS)}")


def _tokens(requests: Iterable[dict], key: str) -> int:
    # An ok request that did not report a count contributes no tokens
    # rather than a guess.
    return sum(r.get(key) or 0 for r in requests)


def _tpot(request: dict) -> float | None:
    tokens, e2e, ttft = request.get("completion_tokens"), request.get("e2e_s"), request.get("ttft_s")
    if tokens is None or tokens <= 1 or e2e is None or ttft is None:
        return None
    return (e2e - ttft) / (tokens - 1)


def repeat_metrics(requests: list[dict], run: dict) -> dict:
    """All METRIC_NAMES for one repeat, from its request records and run record.

    Only status "ok" requests count, in throughput and latency alike; a
    repeat with no ok request has throughput 0 and latency None.
    Throughput is over run["wall_s"] (None when wall_s is not positive).
    """
    ok = [r for r in requests if r.get("status") == "ok"]
    wall = run["wall_s"]
    prompt, completion = _tokens(ok, "prompt_tokens"), _tokens(ok, "completion_tokens")
    counts = (len(ok), completion, prompt + completion)
    out = {name: (n / wall if wall > 0 else None) for name, n in zip(THROUGHPUT, counts)}

    samples = {
        "ttft": [r["ttft_s"] for r in ok if r.get("ttft_s") is not None],
        "tpot": [t for t in map(_tpot, ok) if t is not None],
        "itl": [gap for r in ok for gap in (r.get("itl_s") or ())],
        "e2e": [r["e2e_s"] for r in ok if r.get("e2e_s") is not None],
    }
    for prefix in LATENCY_PREFIXES:
        out.update(stats.percentile_summary(samples[prefix], prefix=prefix))
    out["peak_rss_mb"] = run.get("peak_rss_mb")
    for name in LOAD_METRICS:  # run records carry them from harness 0.9.0; older summaries stay as they were
        if name in run:
            out[name] = run[name]
    return out


def repeat_failed(requests: list[dict]) -> bool:
    """A repeat failed when it sent nothing, any request did not finish ok, or it produced no token."""
    return (not requests or any(r.get("status") != "ok" for r in requests)
            or _tokens(requests, "completion_tokens") == 0)


def per_repeat_outcome(records: Iterable[dict], metric: str = COMPARED_METRIC) -> dict[tuple[str, int], tuple]:
    """(server, repeat) → (metric of that repeat, whether it failed), over request and run records:
    what validate's trials decide on."""
    requests: dict[tuple[str, int], list[dict]] = {}
    runs = {}
    for rec in records:
        key = (rec["server"], rec["repeat"])
        if rec["type"] == "run":
            runs[key] = rec
        else:
            requests.setdefault(key, []).append(rec)
    return {key: (repeat_metrics(requests.get(key, []), run)[metric], repeat_failed(requests.get(key, [])))
            for key, run in runs.items()}


def _collect(records: Iterable[dict]) -> dict:
    """{(server, case): {"runs": {repeat: run}, "requests": {repeat: [...]}}} in first-seen order."""
    groups: dict = {}
    for rec in records:
        group = groups.setdefault((rec["server"], rec["case"]), {"runs": {}, "requests": {}})
        if rec["type"] == "run":
            if rec["repeat"] in group["runs"]:
                raise ValueError(f"duplicate run record for {rec['server']}/{rec['case']} repeat {rec['repeat']}")
            group["runs"][rec["repeat"]] = rec
        elif rec["type"] == "request":
            group["requests"].setdefault(rec["repeat"], []).append(rec)
        else:
            raise ValueError(f"unknown record type {rec['type']!r}")
    for (server, case), group in groups.items():
        orphans = sorted(set(group["requests"]) - set(group["runs"]))
        if orphans:
            # Without its run record a repeat has no wall time, so no throughput.
            raise ValueError(f"{server}/{case}: requests for repeats {orphans} have no run record")
    return groups


def prompt_cache(requests: Iterable[dict]) -> dict | None:
    """Prompt tokens the server said it served from its cache, over ok requests that said so.

    None when no request reported cached_tokens (a server without a prefix
    cache, or records written before the field existed).
    """
    told = [r for r in requests if r.get("status") == "ok" and r.get("cached_tokens") is not None]
    if not told:
        return None
    cached, prompt = _tokens(told, "cached_tokens"), _tokens(told, "prompt_tokens")
    return {"requests": len(told), "cached_tokens": cached, "prompt_tokens": prompt,
            "fraction": cached / prompt if prompt else None}


def _group_summary(server: str, case: str, group: dict, *, confidence: float) -> tuple[dict, dict]:
    repeats = sorted(group["runs"])
    by_repeat = {i: repeat_metrics(group["requests"].get(i, []), group["runs"][i]) for i in repeats}
    counts = dict.fromkeys(STATUSES, 0)
    for reqs in group["requests"].values():
        for r in reqs:
            counts[r["status"]] += 1
    metrics = {}
    for name in METRIC_NAMES:
        values = [by_repeat[i][name] for i in repeats if by_repeat[i].get(name) is not None]
        if values:  # a metric no repeat could measure is left out, not faked
            metrics[name] = stats.describe(values, confidence=confidence)
    summary = {"server": server, "case": case, "n_repeats": len(repeats), "counts": counts,
               "per_repeat": [by_repeat[i] for i in repeats], "metrics": metrics}
    cache = prompt_cache(r for reqs in group["requests"].values() for r in reqs)
    if cache is not None:
        summary["prompt_cache"] = cache
    failed = {i for i in repeats if repeat_failed(group["requests"].get(i, []))}
    return summary, (by_repeat, failed)


def _expand(requests: Iterable[Comparison | Sequence[str]], by_key: dict) -> list[tuple[str, Comparison]]:
    cases_in_order = list(dict.fromkeys(case for _, case in by_key))
    servers = {server for server, _ in by_key}
    out = []
    for req in requests:
        req = req if isinstance(req, Comparison) else Comparison(*req)
        case, a, b = req.case, req.a, req.b
        for server in (a, b):
            if server not in servers:
                raise ValueError(f"comparison names server {server!r}, which has no records")
        if case == "*":
            out += [(c, req) for c in cases_in_order if (a, c) in by_key and (b, c) in by_key]
        elif (a, case) in by_key and (b, case) in by_key:
            out.append((case, req))
        else:
            raise ValueError(f"comparison {case!r}: servers {a!r} and {b!r} did not both run it")
    return out


def _no_ratio(n_pairs: int, *, confidence: float) -> dict:
    return {"ratio": None, "ci_low": None, "ci_high": None, "confidence": confidence,
            "method": stats.PAIRED_METHOD, "p_value": None, "test": stats.PAIRED_TEST, "n_pairs": n_pairs}


def paired_comparison(a: Mapping[int, float | None], b: Mapping[int, float | None], *,
                      failed_a: Collection[int] = (), failed_b: Collection[int] = (),
                      higher_is_better: bool = True, confidence: float = 0.95,
                      threshold: float = 0.0) -> dict | None:
    """Ratio a/b of one metric over repeats paired by index, where failures count against their side.

    a and b map repeat index → value. A repeat is failed for a side when it is in
    failed_x or missing from x. Failed repeats never enter the ratio (a crashed
    repeat has no speed) and are never silently dropped: "failed_repeats" counts
    them, and the side with more failed repeats loses ("slower" when a failed more,
    "faster" when b did) whatever the ratio says. Without failures the result is
    the plain paired ratio, and None when fewer than 2 pairs can be formed (the
    metric was not measurable, e.g. TPOT of one-token answers).
    """
    every = set(a) | set(b)
    lost_a = {i for i in every if i not in a or i in failed_a}
    lost_b = {i for i in every if i not in b or i in failed_b}
    pairs = [(a[i], b[i]) for i in sorted(every - lost_a - lost_b)]
    # A ratio needs a positive value on both sides; n_pairs says how many pairs survived.
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None and x > 0 and y > 0]
    if len(pairs) >= 2:
        result = stats.paired_ratio([x for x, _ in pairs], [y for _, y in pairs], confidence=confidence)
        verdict = stats.verdict(result["ci_low"], result["ci_high"], threshold=threshold,
                                higher_is_better=higher_is_better)
    elif lost_a or lost_b:
        result, verdict = _no_ratio(len(pairs), confidence=confidence), "no detectable difference"
    else:
        return None
    if lost_a or lost_b:
        result["failed_repeats"] = {"a": len(lost_a), "b": len(lost_b)}
        if len(lost_a) != len(lost_b):
            verdict = "slower" if len(lost_a) > len(lost_b) else "faster"
    return {**result, "verdict": verdict}


def as_speed(value: float | None, metric: str) -> float | None:
    """The metric oriented so that higher is better: a time becomes its reciprocal (a rate), so
    one rule ("B/A below 1") reads every metric; None and non-positive times stay unusable."""
    if higher_is_better(metric):
        return value
    return 1.0 / value if value is not None and value > 0 else None


def decided_metric(validation: dict) -> str:
    """The metric a validation block's trials decided on (blocks before harness 0.10.0 name none:
    they decided on output tok/s)."""
    return validation.get("metric", COMPARED_METRIC)


def decision_label(metric: str) -> str:
    """What ratios decided on `metric` are ratios of, in words: a time is read as a rate."""
    return metric if higher_is_better(metric) else f"{metric} (as a rate, 1/{metric})"


def is_regression(comparison: dict, *, threshold: float) -> bool:
    """compare's gate on a stored comparison a/b, a being the candidate: a lost more repeats to
    failures than b, or its ratio is significantly and materially worse (stats.regression_flag).
    A comparison of times (its "metric" is not a rate) is read as the ratio of rates, 1/ratio."""
    failed = comparison.get("failed_repeats") or {}
    if failed.get("a", 0) > failed.get("b", 0):
        return True
    ratio, metric = comparison["ratio"], comparison.get("metric", COMPARED_METRIC)
    if ratio is None:
        return False
    # As rates, the interval's upper end comes from a time ratio's lower end.
    upper = comparison["ci_high"] if higher_is_better(metric) else as_speed(comparison["ci_low"], metric)
    return stats.regression_flag(as_speed(ratio, metric), upper, threshold=threshold)


def _compare(case: str, req: Comparison, metric: str, by_key: dict, *, confidence: float,
             threshold: float) -> dict | None:
    a, b = req.a, req.b
    (ra, fa), (rb, fb) = by_key[(a, case)], by_key[(b, case)]
    result = paired_comparison({i: m[metric] for i, m in ra.items()}, {i: m[metric] for i, m in rb.items()},
                               failed_a=fa, failed_b=fb, higher_is_better=higher_is_better(metric),
                               confidence=confidence, threshold=threshold)
    if result is None:
        warnings.warn(f"comparison {case}: {a} vs {b} on {metric} skipped: fewer than 2 usable repeat pairs",
                      RuntimeWarning, stacklevel=3)
        return None
    verdict = result.pop("verdict")
    out = {"case": case, "a": a, "b": b, "metric": metric, **result, "verdict": verdict}
    if req.cache is not None:
        out["cache"] = req.cache
    if req.setup is not None:
        out["setup"] = req.setup
    return out


def summarize(records: list[dict], *, comparisons: Sequence[Comparison | tuple[str, str, str]] = (),
              confidence: float = 0.95, threshold: float = 0.0) -> dict:
    """The summary.json object without "run_id" and "validation" (the caller adds those).

    comparisons: Comparison objects, or (case, a, b) tuples meaning
    output_tok_per_s only. Each yields, per case and metric, the paired ratio
    a/b of the metric over repeats with the same index, and a verdict in which
    "faster" means a is better than b: a ratio above 1 for throughput, below 1
    for times such as ttft_p50_s.
    """
    groups = _collect(records)
    summaries, by_key = [], {}
    for (server, case), group in groups.items():
        summary, by_key[(server, case)] = _group_summary(server, case, group, confidence=confidence)
        summaries.append(summary)
    compared = [_compare(case, req, metric, by_key, confidence=confidence, threshold=threshold)
                for case, req in _expand(comparisons, by_key) for metric in req.metrics]
    return {"schema_version": 1, "groups": summaries, "comparisons": [c for c in compared if c is not None]}
