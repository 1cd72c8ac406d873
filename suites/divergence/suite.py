"""The divergence suite on the suite contract: prompts.toml, distractors.toml and cases.toml →
serial reference, batches and a serial control over HTTP → divergence records → agreement,
exact-match rate and first-divergence statistics with scipy intervals (summary.py)."""

from __future__ import annotations

import argparse

from harness.suite import Suite

from . import runner
from .cases import load_cases, parse_concurrency
from .summary import summarize

# Our server's prefix cache off: a cache hit prefills differently from a cold prompt, so the
# second sending of a prompt would mix a cache effect into the batch and noise-floor figures.
# A later --server-arg=--prefix-cache-bytes=N turns it back on (the last flag wins).
SERVER_ARGS = ("--prefix-cache-bytes", "0")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", default=None,
                        help="batch sizes to test, comma-separated, e.g. 2,4,8 (default: the case's)")
    parser.add_argument("--runs", dest="repeats", type=int, default=None,
                        help="runs of the whole protocol (the same as --repeats)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of each case")
    parser.add_argument("--min-exact", type=float, default=None,
                        help="verdict threshold on the exact-match rate's 95%% Wilson bounds (default: the case's)")


def _cases(selection: list[str], args: argparse.Namespace) -> list:
    return load_cases(selection, concurrency=parse_concurrency(getattr(args, "concurrency", None)),
                      limit=getattr(args, "limit", None), min_exact=getattr(args, "min_exact", None))


def _print(summary: dict, servers: list[dict], *, console) -> None:
    from harness.report_divergence import console_table
    console.print(console_table(summary["divergence"]))
    failed = sum(c["errors"] + c["reference_errors"] for c in summary["divergence"]["cells"])
    if failed:
        console.print(f"[yellow]{failed} generations were not compared (they, or their reference, failed); "
                      "each record's error is in raw.jsonl[/yellow]")
    for s in servers:
        if s["status"] != "ran":
            console.print(f"[yellow]{s['label']} did not run:[/yellow] {(s['reason'] or '').splitlines()[0]}")


SUITE = Suite(
    name="divergence",
    description="greedy output alone vs inside concurrent batches, compared by token id, with a serial-vs-serial "
                "noise floor (suites/divergence/)",
    record_types=("divergence",),
    load_cases=_cases,
    warm_up=runner.warm_up,
    run=runner.run,
    summarize=summarize,
    print_summary=_print,
    default_cases="default",
    default_peers="",
    default_repeats=3,
    options=_options,
    server_args=SERVER_ARGS,
)
