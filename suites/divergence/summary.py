"""Divergence records → the summary's "divergence" block: one cell per server, case and condition.

Conditions: "control" (the prompt alone again: serial against serial, the noise floor) and
"batch" at each batch size. Every statistic comes from scipy (harness/stats.py):
- exact-match rate: Wilson interval over prompts, a prompt counting as exact only when it
  matched in every run (runs of one prompt are not independent draws, so they are not
  counted as separate trials);
- mean agreement: bootstrap interval of the mean over prompts (each prompt's agreement
  averaged over runs);
- per run: each run's mean agreement and exact-match rate, with a t interval over runs;
- first divergence: the distribution of the first divergent token index;
- margin: the reference's top-1 minus top-2 log-probability at the divergence point.
The verdict reads the exact-match interval against the case's `min_exact`: "meets" when its
lower bound reaches it, "fails" when even its upper bound is below it, else "inconclusive".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from harness import stats

CONFIDENCE = 0.95
NEAR_TIE = 0.1  # nats: a divergence with a smaller reference margin is counted as a near-tie
WILSON_METHOD = "Wilson score interval over prompts (exact = identical ids in every run)"
RUNS_METHOD = stats.T_METHOD + ", over runs"
VERDICTS = ("meets", "fails", "inconclusive")


def verdict(ci_low: float | None, ci_high: float | None, *, min_exact: float) -> str:
    if ci_low is None or ci_high is None:
        return "inconclusive"
    if ci_low >= min_exact:
        return "meets"
    if ci_high < min_exact:
        return "fails"
    return "inconclusive"


def _interval(values: Sequence[float]) -> dict:
    if not values:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None}
    d = stats.describe(values, confidence=CONFIDENCE)
    return {"n": d["n"], "mean": d["mean"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]}


def _first_divergence(indices: list[int]) -> dict:
    values, counts = np.unique(indices, return_counts=True) if indices else ((), ())
    return {"n": len(indices), "counts": [[int(i), int(c)] for i, c in zip(values, counts)],
            "median": float(np.median(indices)) if indices else None,
            "min": min(indices) if indices else None, "max": max(indices) if indices else None}


def _margins(values: list[float]) -> dict:
    return {"n": len(values), "median": float(np.median(values)) if values else None,
            "min": min(values) if values else None, "near_ties": sum(v < NEAR_TIE for v in values)}


def cell(records: list[dict], *, min_exact: float) -> dict:
    """The statistics of one condition's records (one server, case, condition and batch size)."""
    compared = [r for r in records if r["match"] is not None]
    runs = sorted({r["repeat"] for r in records})
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    by_run: dict[int, list[dict]] = defaultdict(list)
    for r in compared:
        by_prompt[r["prompt"]].append(r["match"])
        by_run[r["repeat"]].append(r["match"])
    prompt_agreement = [float(np.mean([m["agreement"] for m in ms])) for ms in by_prompt.values()]
    exact_prompts = sum(all(m["exact"] for m in ms) for ms in by_prompt.values())
    n = len(by_prompt)
    low, high = stats.wilson(exact_prompts, n, confidence=CONFIDENCE) if n else (None, None)
    agreement = (stats.bootstrap_mean(prompt_agreement, confidence=CONFIDENCE) if prompt_agreement else
                 {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "interval": None,
                  "method": stats.BOOTSTRAP_MEAN_METHOD})
    diverged = [r["match"] for r in compared if not r["match"]["exact"]]
    deltas = [r["match"]["max_abs_logprob_delta"] for r in compared if r["match"]["max_abs_logprob_delta"] is not None]
    return {
        "n_prompts": n, "n_runs": len(runs), "comparisons": len(compared),
        "errors": len(records) - len(compared),
        "exact": {"prompts": exact_prompts, "n": n, "rate": exact_prompts / n if n else None,
                  "ci_low": low, "ci_high": high, "method": WILSON_METHOD,
                  "comparisons_exact": sum(r["match"]["exact"] for r in compared)},
        "agreement": {k: agreement[k] for k in ("n", "mean", "ci_low", "ci_high", "interval")}
        | {"method": stats.BOOTSTRAP_MEAN_METHOD + ", over prompts"},
        "per_run": {"runs": [i for i in runs if i in by_run],
                    "agreement": [float(np.mean([m["agreement"] for m in by_run[i]])) for i in runs if i in by_run],
                    "exact_rate": [float(np.mean([m["exact"] for m in by_run[i]])) for i in runs if i in by_run],
                    "method": RUNS_METHOD},
        "first_divergence": _first_divergence([m["first_divergence"] for m in diverged]),
        "margin": _margins([m["margin"] for m in diverged if m["margin"] is not None]),
        "max_abs_logprob_delta": max(deltas) if deltas else None,
        "verdict": verdict(low, high, min_exact=min_exact),
    }


def _with_run_intervals(c: dict) -> dict:
    per_run = c["per_run"]
    per_run["agreement_ci"] = _interval(per_run["agreement"])
    per_run["exact_rate_ci"] = _interval(per_run["exact_rate"])
    return c


def summarize_divergence(records: Iterable[dict], *, min_exact: dict[str, float] | float = 0.9) -> dict:
    """The "divergence" block. `min_exact` is one threshold, or one per case name."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    references: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["type"] != "divergence":
            raise ValueError(f"the divergence summary reads divergence records, not {r['type']!r}")
        if r["condition"] == "reference":
            references[(r["server"], r["case"])].append(r)
        else:
            groups[(r["server"], r["case"], r["condition"], r["batch_size"])].append(r)
    thresholds = min_exact if isinstance(min_exact, dict) else defaultdict(lambda: min_exact)
    # The noise floor first, then batch sizes in increasing order.
    order = sorted(groups, key=lambda k: (k[0], k[1], k[2] != "control", k[3]))
    cells = []
    for key in order:
        server, case, condition, size = key
        refs = references[(server, case)]
        cells.append({"server": server, "case": case, "condition": condition, "batch_size": size,
                      "reference_errors": sum(r["status"] != "ok" for r in refs),
                      **_with_run_intervals(cell(groups[key], min_exact=thresholds[case])),
                      "min_exact": thresholds[case]})
    return {"confidence": CONFIDENCE, "near_tie_below": NEAR_TIE, "cells": cells}


def summarize(records: list[dict], *, comparisons: Sequence = (), cases: Sequence = ()) -> dict:
    """The summary body for the suite contract: no throughput groups, no server comparisons."""
    if comparisons:
        raise ValueError("the divergence suite makes no server comparisons")
    thresholds = {c.name: c.min_exact for c in cases}
    missing = {r["case"] for r in records} - set(thresholds)
    if missing:
        raise ValueError(f"records of cases {sorted(missing)} have no case settings (min_exact)")
    return {"groups": [], "comparisons": [], "divergence": summarize_divergence(records, min_exact=thresholds)}
