"""The measuring commands, over any suite (harness/suite.py): bench, compare and calibrate."""

from __future__ import annotations

from collections import defaultdict

# Throughput's pairing rules live with the suite; these names stay importable from here.
from suites.throughput.comparisons import BENCH_METRICS, bench_comparisons, cache_label

from .bench import Plan, execute, suite_of
from .machine_load import trial_loads
from .metrics import (COMPARED_METRIC, Comparison, as_speed, decided_metric, decision_label, higher_is_better,
                      is_regression, paired_comparison, per_repeat_outcome)
from . import calibrate as bounds
from .publish import publish
from .report_format import fmt_ratio
from .stats import wilson

__all__ = ["BENCH_METRICS", "bench", "bench_comparisons", "cache_label", "calibrate", "compare", "validation_block"]


def _report(args, console) -> None:
    from .reporting import render_all
    render_all(args.evidence_dir, args.reports_dir, console=console)


def with_records(servers: list[dict], records: list[dict]) -> list[dict]:
    """The servers that measured something: a peer that ran only cases it cannot serve
    (embeddings) has nothing to compare."""
    recorded = {rec["server"] for rec in records}
    return [s for s in servers if s["label"] in recorded]


def bench(plan: Plan, args, *, console) -> int:
    suite = suite_of(plan)
    outcome = execute(plan, log_dir=args.log_dir, console=console)
    comparisons = suite.bench_comparisons(with_records(outcome.servers, outcome.records))
    directory, summary = publish(plan, outcome, evidence_root=args.evidence_dir, comparisons=comparisons)
    suite.print_summary(summary, outcome.servers, console=console)
    console.print(f"evidence: {directory}")
    _report(args, console)
    return 0


def compare(plan: Plan, args, *, console) -> int:
    suite = suite_of(plan)
    suite.require_comparable("compare")
    outcome = execute(plan, log_dir=args.log_dir, console=console)
    directory, summary = publish(plan, outcome, evidence_root=args.evidence_dir,
                                 comparisons=[reported("B", "A", suite.compared_metric)])
    suite.print_summary(summary, outcome.servers, console=console)
    console.print(f"evidence: {directory}")
    decided = [c for c in summary["comparisons"] if c["metric"] == suite.compared_metric]
    for c in decided:
        worse = "below" if higher_is_better(c["metric"]) else "above"
        console.print(f"decision in {c['case']} on {c['metric']}: B/A {fmt_ratio(c)} ({worse} 1: B is slower)")
    regressions = [c for c in decided if is_regression(c, threshold=args.threshold)]
    for c in regressions:
        failed = c.get("failed_repeats") or {}
        if failed.get("a", 0) > failed.get("b", 0):
            console.print(f"[red]regression[/red] in {c['case']}: {failed['a']} repeat(s) of B failed or produced "
                          f"nothing, against {failed['b']} of A")
        else:
            console.print(f"[red]regression[/red] in {c['case']}: B/A {c['metric']} = {fmt_ratio(c)} "
                          f"(threshold {args.threshold:.1%})")
    return 1 if regressions else 0


def reported(a: str, b: str, metric: str) -> Comparison:
    """a/b on the metric the rule decides on, with output tok/s beside it (the headline figure)."""
    return Comparison("*", a, b, tuple(dict.fromkeys((COMPARED_METRIC, metric))))


def per_trial(outcomes: dict[tuple[str, int], tuple], *, pairs_per_trial: int) -> dict[int, dict[str, dict]]:
    """trial → server → {repeat: (value, failed)}, from per-repeat outcomes keyed (server, repeat)."""
    trials: dict[int, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for (server, repeat), outcome in sorted(outcomes.items(), key=lambda kv: kv[0][1]):
        trials[repeat // pairs_per_trial][server][repeat] = outcome
    return trials


def _decide(candidate: dict, baseline: dict, *, threshold: float) -> dict | None:
    """One compare decision, candidate/baseline, over repeats {i: (value, failed)}."""
    return paired_comparison({i: v for i, (v, _) in candidate.items()}, {i: v for i, (v, _) in baseline.items()},
                             failed_a={i for i, (_, f) in candidate.items() if f},
                             failed_b={i for i, (_, f) in baseline.items() if f}, threshold=threshold)


def _flagged(decisions: list[dict | None], *, threshold: float) -> int:
    return sum(d is not None and is_regression(d, threshold=threshold) for d in decisions)


def validation_block(records: list[dict], *, pairs_per_trial: int, slowdown: float, threshold: float,
                     metric: str = COMPARED_METRIC, per_repeat=per_repeat_outcome) -> dict:
    """Each trial is one `compare` decision (A2 vs A, planted vs A) on its own pairs.

    The gate rule is counted at `threshold` (compare's default, so the rule CI
    relies on is the rule validated) and, for reference, at threshold 0: the
    bare significance test. A failed repeat counts against its server, as in
    compare. `planted_ratio` is the slowdown the plant really cost, over every
    pair of the run. `per_repeat` is the suite's (records, metric) → {(server,
    repeat): (value, failed)} (throughput's by default). Every ratio in the block
    is one of speeds (metrics.as_speed): for a time such as itl_p50_s, 1/time, so
    "planted/A 0.94" reads as "6% slower" whatever the metric. Blocks that decide
    on another metric than output tok/s name it ("metric"; older blocks have none).
    """
    outcomes = {k: (as_speed(v, metric), failed) for k, (v, failed) in per_repeat(records, metric).items()}
    trials = per_trial(outcomes, pairs_per_trial=pairs_per_trial)
    n = len(trials)
    aa_ratios, planted_ratios = ([_decide(servers[c], servers["A"], threshold=threshold) for servers in trials.values()]
                                 for c in ("A2", "planted"))
    aa, planted = _flagged(aa_ratios, threshold=threshold), _flagged(planted_ratios, threshold=threshold)
    every = {s: {i: o for servers in trials.values() for i, o in servers[s].items()} for s in ("A", "planted")}
    realised = _decide(every["planted"], every["A"], threshold=threshold) or {}
    block = {"aa_trials": n, "aa_flagged": aa, "false_positive_rate": aa / n, "fpr_ci": list(wilson(aa, n)),
             "planted_trials": n, "planted_flagged": planted, "power": planted / n,
             "power_ci": list(wilson(planted, n)), "planted_slowdown": slowdown, "alpha": 0.05,
             "threshold": threshold, "pairs_per_trial": pairs_per_trial,
             "aa_significant": _flagged(aa_ratios, threshold=0.0),
             "planted_significant": _flagged(planted_ratios, threshold=0.0),
             "planted_ratio": {k: realised.get(k) for k in ("ratio", "ci_low", "ci_high")}
             | {"n_pairs": realised.get("n_pairs", 0)}}
    block |= trial_load(records, trials=sorted(trials), pairs_per_trial=pairs_per_trial)
    if metric != COMPARED_METRIC:
        block["metric"] = metric
    return block


def trial_load(records: list[dict], *, trials: list[int], pairs_per_trial: int) -> dict:
    """Per trial, the most load outside the run in any of its repeats (harness 0.9.0+ records it),
    so a trial run beside other work shows as such; {} for runs recorded without it. It informs
    the reader and leaves the decision alone."""
    most: dict[int, float] = {}
    for r in records:
        if r.get("type") == "run" and r.get("foreign_cpu") is not None:
            t = r["repeat"] // pairs_per_trial
            most[t] = max(most.get(t, 0.0), r["foreign_cpu"])
    return {"trial_foreign_cpu_max": [most.get(t) for t in trials]} if most else {}


def calibrate(plan: Plan, args, *, console) -> int:
    suite = suite_of(plan)
    suite.require_comparable("calibrate")
    outcome = execute(plan, log_dir=args.log_dir, console=console)
    block = validation_block(outcome.records, pairs_per_trial=args.repeats, slowdown=args.slowdown,
                             threshold=args.threshold, metric=suite.compared_metric, per_repeat=suite.per_repeat)
    block["verdict"] = bounds.verdict(block, quick=args.quick)
    directory, summary = publish(plan, outcome, evidence_root=args.evidence_dir, validation=block,
                                 comparisons=[reported(s, "A", suite.compared_metric) for s in ("A2", "planted")])
    console.print(
        f"A/A: {block['aa_flagged']}/{block['aa_trials']} trials flagged a regression "
        f"(rate {block['false_positive_rate']:.3f}, Wilson 95% [{block['fpr_ci'][0]:.3f}, {block['fpr_ci'][1]:.3f}]); "
        f"planted sleep of {args.slowdown:.0%} of each step: {block['planted_flagged']}/{block['planted_trials']} "
        f"caught (power {block['power']:.3f}, Wilson 95% [{block['power_ci'][0]:.3f}, {block['power_ci'][1]:.3f}]); "
        f"it really cost {bounds.plant_cost(block, detail=True)}; decided on {decision_label(decided_metric(block))}")
    if loads := trial_loads(block):
        console.print(f"load outside the run: {loads}")
    console.print(f"rule: B/A interval below 1 and estimate more than {block['threshold']:.1%} below 1, "
                  f"or more failed repeats than A; {block['pairs_per_trial']} pairs per trial; at threshold 0 "
                  f"A/A flags {block['aa_significant']}/{block['aa_trials']}, planted "
                  f"{block['planted_significant']}/{block['planted_trials']}")
    decided = block["verdict"]
    colour = {bounds.PROVEN: "green", bounds.NOT_PROVEN: "yellow", bounds.DISPROVEN: "red"}[decided["status"]]
    console.print(f"[{colour}]{decided['status']}[/{colour}]: FPR Wilson upper bound <= {bounds.MAX_FPR} and power "
                  f"Wilson lower bound >= {bounds.MIN_POWER}, against a plant costing "
                  f"{bounds.PLANT_COST_BAND[0]:.0%}-{bounds.PLANT_COST_BAND[1]:.0%}")
    for reason in decided["reasons"]:
        console.print(f"  - {reason}")
    console.print(f"evidence: {directory}")
    _report(args, console)
    return bounds.EXIT_CODES[decided["status"]]
