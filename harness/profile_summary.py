"""step_part / step_graph records (harness/step_profile.py) → the summary's "profile" block.

Per (batch, part): the median over repeats with a distribution-free interval for the median
(binomial order statistics: no assumption about the shape of the timing distribution; none
below 6 repeats at 95%). Per batch: the step's totals and what they leave over:

    forward parts, summed   the layer parts alone (each pays one eval per layer, so the sum
                            runs above the whole graph when eval overhead matters)
    outside the forward     engine step − whole forward − log-softmax/argmax: the host's work
                            inside mlx-lm's step (Python, slicing, syncs), with the device idle
    host per token          detokenise + stop search + delivery + SSE encoding for b streams:
                            our engine's and API's own Python on top of the step
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from scipy.stats import binom

GROUP_ORDER = ("whole", "engine", "projections", "attention", "norms", "mlp", "lm_head", "other", "sampling", "host")
ENGINE_PART = "engine step (mlx-lm BatchGenerator.next)"
WHOLE_PART = "forward, whole graph"
SAMPLE_PART = "log-softmax + argmax"
FORWARD_GROUPS = ("projections", "attention", "norms", "mlp", "lm_head", "other")
METHOD = ("median over repeats; interval: binomial order statistics for the median (distribution-free); "
          "null below the repeats that allow one")


def median_interval(values: list[float], *, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """(x_(j), x_(n-j+1)) with coverage ≥ confidence for the median, or (None, None)."""
    x = sorted(values)
    n = len(x)
    if n < 2:
        return None, None
    q = (1 - confidence) / 2
    m = int(binom.ppf(q, n, 0.5))
    if binom.cdf(m, n, 0.5) > q:
        m -= 1  # the largest m with P(B <= m) <= q
    j = m + 1
    if j < 1:
        return None, None
    return x[j - 1], x[n - j]


def summarize_profile(records: list[dict], *, confidence: float = 0.95) -> dict:
    times: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    calls: dict[tuple[int, str, str], int] = {}
    graphs = {}
    for r in records:
        if r.get("type") == "step_part":
            key = (r["batch"], r["group"], r["part"])
            times[key].append(r["seconds"])
            calls[key] = r["calls_per_step"]
        elif r.get("type") == "step_graph":
            graphs[r["batch"]] = r
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    parts = []
    for (batch, group, part), values in sorted(times.items(), key=lambda kv: (kv[0][0], rank.get(kv[0][1], 99),
                                                                              kv[0][2])):
        lo, hi = median_interval(values, confidence=confidence)
        parts.append({"batch": batch, "group": group, "part": part, "n": len(values),
                      "calls_per_step": calls[(batch, group, part)], "median_s": statistics.median(values),
                      "ci_low_s": lo, "ci_high_s": hi})
    return {"confidence": confidence, "method": METHOD, "parts": parts,
            "steps": [_step(batch, [p for p in parts if p["batch"] == batch], graphs.get(batch))
                      for batch in sorted({p["batch"] for p in parts})]}


def _step(batch: int, parts: list[dict], graph: dict | None) -> dict:
    by_name = {p["part"]: p["median_s"] for p in parts}
    forward_parts = [p for p in parts if p["group"] in FORWARD_GROUPS]
    engine, whole, sample = by_name.get(ENGINE_PART), by_name.get(WHOLE_PART), by_name.get(SAMPLE_PART)
    step = {"batch": batch, "engine_step_s": engine, "forward_whole_s": whole, "sampling_s": sample,
            "forward_parts_sum_s": sum(p["median_s"] for p in forward_parts) if forward_parts else None,
            "by_group_s": {g: sum(p["median_s"] for p in forward_parts if p["group"] == g)
                           for g in FORWARD_GROUPS if any(p["group"] == g for p in forward_parts)},
            "outside_forward_s": (engine - whole - sample) if None not in (engine, whole, sample) else None,
            "host_per_token_s": sum(p["median_s"] for p in parts if p["group"] == "host") if any(
                p["group"] == "host" for p in parts) else None,
            "ops": graph["ops"] if graph else None,
            "ops_by_primitive": graph["ops_by_primitive"] if graph else None}
    return step
