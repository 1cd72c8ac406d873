"""`python -m harness bench | compare | validate | tools | contracts | report` (what the nox sessions run)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from rich.console import Console

from .servers import REPO_ROOT as REPO, ServerSpec, parse_server_list

# compare's gate, and what validate measures: one constant so the validated rule is the rule CI uses.
REGRESSION_THRESHOLD = 0.05
PAIRS_PER_DECISION = 6  # a multiple of 2 (compare's orders) and of 6 (validate's three servers' orders)


def _common(p: argparse.ArgumentParser, *, cases: str, repeats: int) -> None:
    p.add_argument("--model", default="smollm2-135m", help="catalog id or model folder")
    p.add_argument("--profile", default="text-default", help="serving profile (serving/profiles.toml)")
    p.add_argument("--cases", default=cases, help="comma-separated case names or tags (suites/throughput/cases.toml)")
    p.add_argument("--repeats", type=int, default=repeats, help="measured repeats per server and case")
    p.add_argument("--warmup", type=int, default=1,
                   help="warm-up requests (conversations, in multi-turn cases) per server and case (not recorded)")
    p.add_argument("--evidence-dir", type=Path, default=REPO / "evidence")
    p.add_argument("--reports-dir", type=Path, default=REPO / "reports")
    p.add_argument("--log-dir", type=Path, default=REPO / ".nox" / "server-logs")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="throughput: ours vs peers, interleaved, with evidence")
    _common(bench, cases="seed", repeats=3)
    bench.add_argument("--peers", default="mlx-lm",
                       help="comma-separated: mlx-lm, mlx-lm-nocache, vllm-mlx, and ours-nocache (ours with "
                            "--prefix-cache-bytes 0); '' for none. Warm caches are compared with warm, cold with cold")
    bench.add_argument("--sweep", action="store_true", help="add the concurrency sweep and the long-prompt case")
    compare = sub.add_parser("compare", help="two git revisions of our server, paired and interleaved")
    _common(compare, cases="validation", repeats=PAIRS_PER_DECISION)
    compare.add_argument("rev_a", help="baseline revision (WORKTREE = the working tree)")
    compare.add_argument("rev_b", help="candidate revision (WORKTREE = the working tree)")
    compare.add_argument("--threshold", type=float, default=REGRESSION_THRESHOLD,
                         help="exit 1 when B is significantly slower than A by more than this fraction")
    validate = sub.add_parser("validate", help="A/A false-positive rate and planted-slowdown power")
    _common(validate, cases="validation", repeats=PAIRS_PER_DECISION)  # repeats = interleaved pairs per trial
    validate.add_argument("--trials", type=int, default=20)
    # A sleep of 10% of each (synchronised) engine step; the evidence records the real cost.
    validate.add_argument("--slowdown", type=float, default=0.10, help="planted sleep, as a fraction of each engine step")
    validate.add_argument("--threshold", type=float, default=REGRESSION_THRESHOLD,
                          help="the regression rule's threshold (compare's default)")
    tools = sub.add_parser("tools", help="tool calling on BFCL data (suites/tools/cases.toml), with evidence")
    tools.add_argument("--model", default="qwen2.5-coder-0.5b", help="catalog id or model folder")
    tools.add_argument("--profile", default="text-default", help="serving profile (serving/profiles.toml)")
    tools.add_argument("--categories", default="",
                       help="comma-separated categories or tags (default: the 'default' tag: simple, multiple, "
                            "parallel, parallel_multiple, irrelevance)")
    tools.add_argument("--limit", type=int, default=None, help="cases per category (default: each category's limit)")
    tools.add_argument("--modes", default="", help="comma-separated tool_choice modes: auto, required "
                                                   "(default: cases.toml's)")
    tools.add_argument("--concurrency", type=int, default=None, help="requests in flight (default: cases.toml's)")
    tools.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                       help="pass ARG to our server; repeat for several (write --server-arg=--tool-prompt=generic "
                            "for an ARG that starts with '-'); recorded in the manifest")
    tools.add_argument("--no-scenarios", action="store_true",
                       help="skip the API-contract scenarios (suites/tools/scenarios.toml) run after the cases")
    tools.add_argument("--evidence-dir", type=Path, default=REPO / "evidence")
    tools.add_argument("--reports-dir", type=Path, default=REPO / "reports")
    tools.add_argument("--log-dir", type=Path, default=REPO / ".nox" / "server-logs")
    contracts = sub.add_parser("contracts", help="real client programs against our server (suites/contracts/clients)")
    contracts.add_argument("--clients", default="", help="comma-separated client ids (default: every client file)")
    contracts.add_argument("--tiers", default="", help="comma-separated tiers: sdk, cli, browser (default: all)")
    contracts.add_argument("--capabilities", default="", help="comma-separated capabilities (default: all)")
    contracts.add_argument("--models", default="", help="which served models' cases: default (smollm2-135m), "
                                                         "tools (qwen2.5-coder-0.5b); default: both")
    contracts.add_argument("--profile", default="text-default", help="serving profile (serving/profiles.toml)")
    contracts.add_argument("--evidence-dir", type=Path, default=REPO / "evidence")
    contracts.add_argument("--reports-dir", type=Path, default=REPO / "reports")
    report = sub.add_parser("report", help="render reports/ from stored evidence only")
    report.add_argument("--evidence-dir", type=Path, default=REPO / "evidence")
    report.add_argument("--reports-dir", type=Path, default=REPO / "reports")
    return ap


def _plan(args, *, suite: str, servers: list[ServerSpec], repeats: int | None = None):
    from suites.throughput.cases import load_cases

    from .bench import Plan

    names = [c for c in args.cases.split(",") if c]
    if getattr(args, "sweep", False):
        names += ["sweep"]
    cases = load_cases(names)
    return Plan(suite=suite, model=args.model, profile=args.profile, cases=cases,
                servers=with_embedding_model(servers, cases), repeats=repeats or args.repeats,
                warmup_requests=args.warmup)


def with_embedding_model(servers: list[ServerSpec], cases) -> list[ServerSpec]:
    """Our servers also serve the embedding model that the chosen embeddings cases use."""
    wanted = sorted({c.embedding_model for c in cases if c.endpoint == "embeddings"})
    if len(wanted) > 1:
        raise ValueError(f"the chosen cases use several embedding models ({', '.join(wanted)}); a server serves one")
    if not wanted:
        return servers
    extra = ("--embedding-model", wanted[0])
    return [dataclasses.replace(s, extra_args=(*s.extra_args, *extra)) if s.kind == "mlx-proof" else s
            for s in servers]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "report":
            from .reporting import render_all
            return render_all(args.evidence_dir, args.reports_dir, console=console)
        if args.command == "tools":
            from .tools_suite import tools
            return tools(args, console=console)
        if args.command == "contracts":
            from .contracts_suite import contracts
            return contracts(args, console=console)
        if args.command == "bench":
            from .commands import bench
            servers = [ServerSpec("ours", "mlx-proof"), *parse_server_list(args.peers)]
            return bench(_plan(args, suite="throughput", servers=servers), args, console=console)
        if args.command == "compare":
            from .commands import compare
            revs = [None if r == "WORKTREE" else r for r in (args.rev_a, args.rev_b)]
            servers = [ServerSpec("A", "mlx-proof", revision=revs[0]), ServerSpec("B", "mlx-proof", revision=revs[1])]
            return compare(_plan(args, suite="compare", servers=servers), args, console=console)
        if args.command == "validate":
            from .commands import validate
            servers = [ServerSpec("A", "mlx-proof"), ServerSpec("A2", "mlx-proof"),
                       ServerSpec("planted", "mlx-proof", extra_args=("--planted-slowdown", str(args.slowdown)))]
            if args.repeats % math.factorial(len(servers)):
                # Server order shifts speed by a few percent; an unbalanced trial would carry that bias.
                raise ValueError(f"--repeats (pairs per trial) must be a multiple of {math.factorial(len(servers))} "
                                 "so every trial runs each server order equally often")
            plan = _plan(args, suite="validate", servers=servers, repeats=args.trials * args.repeats)
            return validate(plan, args, console=console)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    return 2
