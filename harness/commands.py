"""The three measuring commands: bench, compare and validate."""

from __future__ import annotations

from collections import defaultdict

from .bench import Plan, execute
from .metrics import COMPARED_METRIC, Comparison, repeat_metrics
from .publish import print_summary, publish
from .stats import paired_ratio, regression_flag, wilson

BENCH_METRICS = ("output_tok_per_s", "ttft_p50_s")
_CACHE_LABEL = {("on", "on"): "warm", ("off", "off"): "cold", ("on", "off"): "warm-vs-cold",
                ("off", "on"): "cold-vs-warm"}


def cache_label(a: str, b: str) -> str:
    return _CACHE_LABEL.get((a, b), "unknown")


def bench_comparisons(servers: list[dict], *, metrics: tuple[str, ...] = BENCH_METRICS) -> list[Comparison]:
    """Like against like, then the cache's own effect, among the servers that ran.

    Each of ours (kind mlx-proof) is compared with each peer whose prompt cache
    is in the same state (warm with warm, cold with cold): a warm cache against
    a cold one would credit the cache to the server. Then ours with the cache on
    against ours with it off. An "unknown" state (a server that cannot say)
    is compared with every peer, as before the state was recorded.
    """
    ran = [s for s in servers if s["status"] == "ran"]
    ours = [s for s in ran if s["kind"] == "mlx-proof"]
    peers = [s for s in ran if s["kind"] != "mlx-proof"]
    state = {s["label"]: s.get("prefix_cache", "unknown") for s in ran}
    out = []
    for a in ours:
        for b in peers:
            sa, sb = state[a["label"]], state[b["label"]]
            if sa == sb or "unknown" in (sa, sb):
                out.append(Comparison("*", a["label"], b["label"], metrics, cache_label(sa, sb)))
    for a in ours:
        for b in ours:
            if (state[a["label"]], state[b["label"]]) == ("on", "off"):
                out.append(Comparison("*", a["label"], b["label"], metrics, "warm-vs-cold"))
    return out


def with_records(servers: list[dict], records: list[dict]) -> list[dict]:
    """The servers that measured something: a peer that ran only cases it cannot serve
    (embeddings) has nothing to compare."""
    recorded = {rec["server"] for rec in records}
    return [s for s in servers if s["label"] in recorded]


def _report(args, console) -> None:
    from .reporting import render_all
    render_all(args.evidence_dir, args.reports_dir, console=console)


def bench(plan: Plan, args, *, console) -> int:
    outcome = execute(plan, log_dir=args.log_dir, console=console)
    comparisons = bench_comparisons(with_records(outcome.servers, outcome.records))
    directory, summary = publish(plan, outcome, evidence_root=args.evidence_dir, comparisons=comparisons)
    print_summary(summary, outcome.servers, console=console)
    console.print(f"evidence: {directory}")
    _report(args, console)
    return 0


def compare(plan: Plan, args, *, console) -> int:
    outcome = execute(plan, log_dir=args.log_dir, console=console)
    directory, summary = publish(plan, outcome, evidence_root=args.evidence_dir, comparisons=[("*", "B", "A")])
    print_summary(summary, outcome.servers, console=console)
    console.print(f"evidence: {directory}")
    regressions = [c for c in summary["comparisons"] if c["metric"] == COMPARED_METRIC
                   and regression_flag(c["ratio"], c["ci_high"], threshold=args.threshold)]
    for c in regressions:
        console.print(f"[red]regression[/red] in {c['case']}: B/A = {c['ratio']:.3f} "
                      f"[{c['ci_low']:.3f}, {c['ci_high']:.3f}] (threshold {args.threshold:.0%})")
    return 1 if regressions else 0


def per_trial_throughput(records: list[dict], *, pairs_per_trial: int) -> dict[int, dict[str, list[float]]]:
    """trial → server → output tok/s of each of its repeats, in repeat order."""
    by_run: dict[tuple[str, int], list[dict]] = defaultdict(list)
    runs = {}
    for rec in records:
        key = (rec["server"], rec["repeat"])
        if rec["type"] == "run":
            runs[key] = rec
        else:
            by_run[key].append(rec)
    trials: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (server, repeat), run in sorted(runs.items(), key=lambda kv: kv[0][1]):
        tput = repeat_metrics(by_run[(server, repeat)], run)["output_tok_per_s"]
        trials[repeat // pairs_per_trial][server].append(tput)
    return trials


def _flagged(ratios: list[dict], *, threshold: float) -> int:
    return sum(regression_flag(r["ratio"], r["ci_high"], threshold=threshold) for r in ratios)


def validation_block(records: list[dict], *, pairs_per_trial: int, slowdown: float, threshold: float) -> dict:
    """Each trial is one `compare` decision (A2 vs A, planted vs A) on its own pairs.

    The gate rule is counted at `threshold` (compare's default, so the rule CI
    relies on is the rule validated) and, for reference, at threshold 0: the
    bare significance test. `planted_ratio` is the slowdown the plant really
    cost, over every pair of the run.
    """
    trials = per_trial_throughput(records, pairs_per_trial=pairs_per_trial)
    n = len(trials)
    aa_ratios, planted_ratios = ([paired_ratio(servers[c], servers["A"]) for servers in trials.values()]
                                 for c in ("A2", "planted"))
    aa, planted = _flagged(aa_ratios, threshold=threshold), _flagged(planted_ratios, threshold=threshold)
    every = {s: [v for servers in trials.values() for v in servers[s]] for s in ("A", "planted")}
    realised = paired_ratio(every["planted"], every["A"])
    return {"aa_trials": n, "aa_flagged": aa, "false_positive_rate": aa / n, "fpr_ci": list(wilson(aa, n)),
            "planted_trials": n, "planted_flagged": planted, "power": planted / n,
            "power_ci": list(wilson(planted, n)), "planted_slowdown": slowdown, "alpha": 0.05,
            "threshold": threshold, "pairs_per_trial": pairs_per_trial,
            "aa_significant": _flagged(aa_ratios, threshold=0.0),
            "planted_significant": _flagged(planted_ratios, threshold=0.0),
            "planted_ratio": {k: realised[k] for k in ("ratio", "ci_low", "ci_high", "n_pairs")}}


def validate(plan: Plan, args, *, console) -> int:
    outcome = execute(plan, log_dir=args.log_dir, console=console)
    block = validation_block(outcome.records, pairs_per_trial=args.repeats, slowdown=args.slowdown,
                             threshold=args.threshold)
    directory, summary = publish(plan, outcome, evidence_root=args.evidence_dir, validation=block,
                                 comparisons=[("*", "A2", "A"), ("*", "planted", "A")])
    ok = block["false_positive_rate"] <= 0.05 and block["power"] >= 0.95
    console.print(
        f"A/A: {block['aa_flagged']}/{block['aa_trials']} trials flagged a regression "
        f"(rate {block['false_positive_rate']:.2f}, Wilson 95% [{block['fpr_ci'][0]:.2f}, {block['fpr_ci'][1]:.2f}]); "
        f"planted {args.slowdown:.0%} slowdown: {block['planted_flagged']}/{block['planted_trials']} caught "
        f"(power {block['power']:.2f}, Wilson 95% [{block['power_ci'][0]:.2f}, {block['power_ci'][1]:.2f}]; "
        f"it cost {1 - block['planted_ratio']['ratio']:.1%}) → "
        f"{'[green]within bounds[/green]' if ok else '[red]outside bounds[/red]'} (FPR ≤ 0.05, power ≥ 0.95)")
    console.print(f"rule: B/A interval below 1 and estimate more than {block['threshold']:.0%} below 1, "
                  f"{block['pairs_per_trial']} pairs per trial; at threshold 0 A/A flags "
                  f"{block['aa_significant']}/{block['aa_trials']}, planted {block['planted_significant']}/{block['planted_trials']}")
    console.print(f"evidence: {directory}")
    _report(args, console)
    return 0 if ok else 1
