"""The throughput suite on the suite contract: cases.toml → streamed chat requests (or embeddings
requests, ours only) → request/run
records → per-repeat metrics with t intervals and paired ratios (harness/metrics.py)."""

from __future__ import annotations

import argparse

from harness.metrics import DECISION_METRIC, per_repeat_outcome, summarize
from harness.suite import Suite

from . import runner
from .cases import load_cases
from .comparisons import bench_comparisons


def _cases(selection: list[str], args: argparse.Namespace) -> list:
    names = list(selection)
    if getattr(args, "sweep", False):
        names += ["sweep"]
    return load_cases(names)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweep", action="store_true", help="add the concurrency sweep and the long-prompt case")


def _summarize(records: list[dict], *, comparisons=(), cases=()) -> dict:
    return summarize(records, comparisons=comparisons)  # the cases' settings are not needed: all in the records


def _print(summary: dict, servers: list[dict], *, console) -> None:
    from harness.publish import print_summary
    print_summary(summary, servers, console=console)


SUITE = Suite(
    name="throughput",
    description="streamed chat requests under an arrival pattern: tok/s, TTFT, ITL, TPOT, E2E, RSS "
                "(suites/throughput/cases.toml)",
    record_types=("request", "run"),
    load_cases=_cases,
    warm_up=runner.warm_up,
    run=runner.run,
    summarize=_summarize,
    print_summary=_print,
    default_cases="seed",
    calibration_cases="validation",
    # Both figures the bench reports: engine against engine (mlx-lm given our BLAS) and as shipped.
    default_peers="mlx-lm,mlx-lm-as-shipped",
    default_repeats=3,
    compared_metric=DECISION_METRIC,
    per_repeat=per_repeat_outcome,
    bench_comparisons=bench_comparisons,
    options=_options,
    server_args_for=runner.embedding_model_args,
    serves=runner.serves,
)
