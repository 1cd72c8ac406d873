"""Raw tool_case records -> the summary's `tools` block (Wilson intervals and McNemar from scipy).

Accuracy counts every request sent: an errored request is not correct (`errors` says how many).
Pairs the suite never sends (irrelevance under "required") are not applicable and count nowhere.
Scenarios (scenarios.py): passed / scenarios run, an errored one counting as not passed; the block
is present only when the raw records hold tool_scenario records, so older runs recompute unchanged.
Parse fidelity: of the ok responses that hold a call in any form (structured tool_calls, or
complete call markup in content), the fraction returned as structured calls with no markup left.
`cut_off` counts the responses with only the opening of a call (a model failure no parser can
read); from 0.5.0 they are outside the denominator (runner.fidelity).
"""

from __future__ import annotations

from collections.abc import Iterable

from scipy import stats as scipy_stats

from harness.stats import wilson

ALL = "*"
METHOD = "Wilson score interval"
PAIRED_TEST = "exact McNemar test (two-sided binomial on discordant pairs)"


def _interval(successes: int, n: int, confidence: float) -> tuple[float | None, float | None]:
    return wilson(successes, n, confidence=confidence) if n else (None, None)


def accuracy_cell(records: list[dict], *, category: str, mode: str, confidence: float) -> dict:
    sent = [r for r in records if r["status"] != "not_applicable"]
    n, correct = len(sent), sum(1 for r in sent if r["correct"] is True)
    low, high = _interval(correct, n, confidence)
    return {"category": category, "mode": mode, "applicable": bool(sent) or not records, "n": n,
            "correct": correct, "errors": sum(1 for r in sent if r["status"] == "error"),
            "accuracy": correct / n if n else None, "ci_low": low, "ci_high": high}


def fidelity_cell(records: list[dict], *, mode: str, confidence: float) -> dict:
    called = [r for r in records if r["status"] == "ok" and r["parse_fidelity"]["contains_call"]]
    clean = sum(1 for r in called if r["parse_fidelity"]["clean"])
    low, high = _interval(clean, len(called), confidence)
    cell = {"mode": mode, "n": len(called), "clean": clean,
            "fidelity": clean / len(called) if called else None, "ci_low": low, "ci_high": high}
    judged = [r for r in records if r["status"] == "ok" and "cut_off" in (r["parse_fidelity"] or {})]
    if judged:  # records from 0.5.0 on; older runs recompute unchanged
        cell["cut_off"] = sum(1 for r in judged if r["parse_fidelity"]["cut_off"])
    return cell


def validity_cell(records: list[dict], *, mode: str, confidence: float) -> dict:
    """Of the requests sent in a mode, how many came back as schema-valid calls (errors count as not)."""
    sent = [r for r in records if r["status"] != "not_applicable"]
    valid = sum(1 for r in sent if r.get("schema_valid") is True)
    low, high = _interval(valid, len(sent), confidence)
    return {"mode": mode, "n": len(sent), "valid": valid, "rate": valid / len(sent) if sent else None,
            "ci_low": low, "ci_high": high}


def paired_difference(records: list[dict], *, category: str, a: str, b: str) -> dict | None:
    """Accuracy of mode a minus mode b over the cases sent under both (errors count as wrong)."""
    by_mode: dict[str, dict[str, bool]] = {a: {}, b: {}}
    for r in records:
        if r["mode"] in by_mode and r["status"] != "not_applicable":
            by_mode[r["mode"]][r["id"]] = r["correct"] is True
    ids = [i for i in by_mode[a] if i in by_mode[b]]
    if not ids:
        return None
    a_only = sum(1 for i in ids if by_mode[a][i] and not by_mode[b][i])
    b_only = sum(1 for i in ids if by_mode[b][i] and not by_mode[a][i])
    acc_a, acc_b = (sum(by_mode[m][i] for i in ids) / len(ids) for m in (a, b))
    discordant = a_only + b_only
    p = float(scipy_stats.binomtest(a_only, discordant, 0.5).pvalue) if discordant else None
    return {"category": category, "a": a, "b": b, "n_pairs": len(ids), "accuracy_a": acc_a, "accuracy_b": acc_b,
            "difference": acc_a - acc_b, "a_only": a_only, "b_only": b_only, "p_value": p, "test": PAIRED_TEST}


def scenario_cell(records: list[dict], *, dialect: str, confidence: float) -> dict:
    n, passed = len(records), sum(1 for r in records if r["passed"] is True)
    low, high = _interval(passed, n, confidence)
    return {"dialect": dialect, "n": n, "passed": passed, "errors": sum(1 for r in records if r["status"] == "error"),
            "rate": passed / n if n else None, "ci_low": low, "ci_high": high}


def scenarios_block(records: list[dict], *, confidence: float) -> dict:
    dialects = list(dict.fromkeys(r["dialect"] for r in records))
    return {"overall": scenario_cell(records, dialect=ALL, confidence=confidence),
            "dialects": [scenario_cell([r for r in records if r["dialect"] == d], dialect=d, confidence=confidence)
                         for d in dialects],
            "failed": [{"id": r["id"], "status": r["status"], "reason": r["reason"]}
                       for r in records if r["passed"] is not True]}


def summarize_tools(records: Iterable[dict], *, confidence: float = 0.95) -> dict:
    records = list(records)
    recs = [r for r in records if r.get("type") == "tool_case"]
    scenario_recs = [r for r in records if r.get("type") == "tool_scenario"]
    categories = list(dict.fromkeys(r["category"] for r in recs))
    modes = list(dict.fromkeys(r["mode"] for r in recs))
    cells = [accuracy_cell([r for r in recs if r["category"] == c and r["mode"] == m], category=c, mode=m,
                           confidence=confidence)
             for c in categories for m in modes if any(r["category"] == c and r["mode"] == m for r in recs)]
    overall = [accuracy_cell([r for r in recs if r["mode"] == m], category=ALL, mode=m, confidence=confidence)
               for m in modes]
    fidelity = [fidelity_cell([r for r in recs if r["mode"] == m], mode=m, confidence=confidence) for m in modes]
    fidelity.append(fidelity_cell(recs, mode=ALL, confidence=confidence))
    validity = [validity_cell([r for r in recs if r["mode"] == m], mode=m, confidence=confidence) for m in modes]
    differences = []
    if {"required", "auto"} <= set(modes):
        for c in [*categories, ALL]:
            subset = recs if c == ALL else [r for r in recs if r["category"] == c]
            if (d := paired_difference(subset, category=c, a="required", b="auto")) is not None:
                differences.append(d)
    block = {"confidence": confidence, "method": METHOD, "cells": cells, "overall": overall,
             "parse_fidelity": fidelity, "schema_validity": validity, "differences": differences}
    if scenario_recs:
        block["scenarios"] = scenarios_block(scenario_recs, confidence=confidence)
    return block
