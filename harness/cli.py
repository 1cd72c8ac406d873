"""`python -m harness suites | bench | compare | calibrate | tools | contracts | profile-step | report | validate |
publish | regress` (what the nox sessions run). bench, compare and calibrate run over any registered suite
(`--suite`, default throughput); validate, publish and regress are profile commands (harness/profile_commands.py)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from . import calibrate as bounds
from .servers import REPO_ROOT as REPO, ServerSpec, parse_server_list

# compare's gate, and what calibrate measures: one rule, so the calibrated rule is the rule CI uses.
# A 5% slowdown must be caught nearly always (calibrate proves >= 95% power on a lower Wilson bound),
# and identical trees almost never flagged, with the line halfway, at 2.5%. With the BLAS shim a
# validation repeat is ~2.3 s; a pair's log-ratio of the median inter-token gap (what the rule
# decides on since harness 0.10.0) varies by 0.031-0.035 (24 quiet trials of 69db9c): 18 pairs put
# the A/A error about 3 standard errors from the line and the plant (6% on that metric) 4.5 beyond it.
REGRESSION_THRESHOLD = 0.025
PAIRS_PER_DECISION = 18  # a multiple of 2 (compare's orders) and of 6 (calibrate's three servers' orders)


def _common(p: argparse.ArgumentParser, suite, *, cases: str, repeats: int) -> None:
    p.add_argument("--suite", default="throughput",
                   help="the suite to run (`python -m harness suites` lists them); default throughput")
    p.add_argument("--model", default="smollm2-135m", help="catalog id or model folder")
    p.add_argument("--profile", default="text-default", help="serving profile (serving/profiles.toml)")
    p.add_argument("--cases", default=None,
                   help=f"comma-separated case names or tags of the suite's case files (default for suite "
                        f"{suite.name}: {cases})")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"measured repeats per server and case (default {repeats})")
    p.add_argument("--warmup", type=int, default=1,
                   help="warm-up requests (conversations, in multi-turn cases) per server and case, not recorded; "
                        "throughput cases warm up with at least one wave at their own concurrency")
    p.add_argument("--dtype", default=None,
                   help="weights dtype of the converted model, e.g. float32 or bfloat16: passed to the catalog "
                        "and to our server's --dtype (default: the server's choice for the backend)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="pass ARG to every server of ours; repeat for several (write --server-arg=--flag for an "
                        "ARG that starts with '-'); recorded in the manifest")
    p.add_argument("--order-seed", type=int, default=None,
                   help="seed of the balanced server-order design (default: drawn; recorded in the manifest)")
    p.add_argument("--launches", type=int, default=None, metavar="N",
                   help="start the servers afresh N times, in balanced start orders, splitting the repeats "
                        "between them (default: once per server, so each starts first once; calibrate: that "
                        "many per trial). The server started first can run a few percent slower all run long")
    p.add_argument("--evidence-dir", type=Path, default=REPO / "evidence")
    p.add_argument("--reports-dir", type=Path, default=REPO / "reports")
    p.add_argument("--log-dir", type=Path, default=REPO / ".nox" / "server-logs")
    _bundle_option(p)
    suite.options(p.add_argument_group(f"suite {suite.name}"))


def _bundle_option(p: argparse.ArgumentParser) -> None:
    # Set by `validate`: the runs it writes for one profile and model share this id (manifest "bundle").
    p.add_argument("--bundle", default=None, help=argparse.SUPPRESS)



def suite_name(argv: list[str]) -> str:
    """The --suite value in argv (before the parser exists: the suite adds its own options)."""
    name = "throughput"
    for i, arg in enumerate(argv):
        if arg == "--suite" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--suite="):
            name = arg.split("=", 1)[1]
    return name


def parser(suite=None) -> argparse.ArgumentParser:
    from suites import get_suite

    suite = suite or get_suite("throughput")
    ap = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("suites", help="list the registered suites")
    bench = sub.add_parser("bench", help="a suite against our server and peers, interleaved, with evidence")
    _common(bench, suite, cases=suite.default_cases, repeats=suite.default_repeats)
    bench.add_argument("--peers", default=None,
                       help="comma-separated: mlx-lm, mlx-lm-nocache, vllm-mlx (each given our BLAS: engine "
                            "against engine), the same with -as-shipped (e.g. mlx-lm-as-shipped: without our BLAS, "
                            "as its README sets it up), and variants of ours: ours-nocache (--prefix-cache-bytes 0), "
                            "ours-deterministic, ours-batch-invariant, ours-compiled; '' for none (default for suite "
                            f"{suite.name}: {suite.default_peers or 'none'}). Warm caches are compared with warm, "
                            "cold with cold")
    compare = sub.add_parser("compare", help="two git revisions of our server, paired and interleaved")
    _common(compare, suite, cases=suite.calibration_cases, repeats=PAIRS_PER_DECISION)
    compare.add_argument("rev_a", help="baseline revision (WORKTREE = the working tree)")
    compare.add_argument("rev_b", help="candidate revision (WORKTREE = the working tree)")
    compare.add_argument("--threshold", type=float, default=REGRESSION_THRESHOLD,
                         help="exit 1 when B is significantly slower than A by more than this fraction, "
                              "or lost more repeats to failures")
    calibrate = sub.add_parser("calibrate",
                               help="prove the comparison rule: A/A false-positive rate and planted-slowdown power")
    # repeats = interleaved pairs per trial
    _common(calibrate, suite, cases=suite.calibration_cases, repeats=PAIRS_PER_DECISION)
    calibrate.add_argument("--trials", type=int, default=None,
                           help=f"compare decisions of each kind (default {bounds.MIN_TRIALS}, the fewest that can "
                                f"prove the bounds; {bounds.QUICK_TRIALS} with --quick)")
    calibrate.add_argument("--quick", action="store_true",
                           help="a few trials: checks the machinery, reports 'not proven' (exit 3), never passes")
    # Measured against a server started in every place (launch blocks), a 10% sleep costs 7.6% (run
    # 21d393). The 7% sleep once seemed to cost only 3.1-3.5% (c381ed, ae37ed, d599a3), but there A,
    # always started first, ran ~2.5% slow itself and hid part of the plant. The evidence records
    # the real cost, and the verdict checks it.
    calibrate.add_argument("--slowdown", type=float, default=0.07,
                           help="planted sleep, as a fraction of each engine step (its measured cost must be "
                                f"{bounds.PLANT_COST_BAND[0]:.0%}-{bounds.PLANT_COST_BAND[1]:.0%})".replace("%", "%%"))
    calibrate.add_argument("--threshold", type=float, default=REGRESSION_THRESHOLD,
                           help="the regression rule's threshold (compare's default)")
    calibrate.add_argument("--pool", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                           help="run nothing: pool the trials of these calibrate runs (same tree, machine and "
                                "settings; e.g. three runs of --trials 25) into one decision and one evidence run")
    from .profile_commands import add_parsers
    add_parsers(sub, compare_repeats=PAIRS_PER_DECISION, threshold=REGRESSION_THRESHOLD)
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
    _bundle_option(tools)
    contracts = sub.add_parser("contracts", help="real client programs against our server (suites/contracts/clients)")
    contracts.add_argument("--clients", default="", help="comma-separated client ids (default: every client file)")
    contracts.add_argument("--tiers", default="", help="comma-separated tiers: sdk, cli, browser (default: all)")
    contracts.add_argument("--capabilities", default="", help="comma-separated capabilities (default: all)")
    contracts.add_argument("--models", default="", help="which served models' cases: default (smollm2-135m), "
                                                         "tools (qwen2.5-coder-0.5b), agent (qwen2.5-coder-1.5b), "
                                                         "vision (a tiny built VLM); default: all")
    contracts.add_argument("--serve", action="append", default=[], metavar="KIND=MODEL",
                           help="serve a model kind's cases on another catalog id or folder, e.g. "
                                "agent=qwen2.5-coder-0.5b (kinds: default, tools, agent, vision)")
    contracts.add_argument("--profile", default="text-default", help="serving profile (serving/profiles.toml)")
    contracts.add_argument("--evidence-dir", type=Path, default=REPO / "evidence")
    contracts.add_argument("--reports-dir", type=Path, default=REPO / "reports")
    step = sub.add_parser("profile-step", help="one decode step broken down (model parts, sampling, host work), "
                                               "as evidence and a report section")
    step.add_argument("--model", default="smollm2-135m", help="catalog id or model folder")
    step.add_argument("--batch", default="1,10,32", help="comma-separated batch sizes")
    step.add_argument("--repeats", type=int, default=20, help="timed repeats of every part (median + interval)")
    step.add_argument("--context", type=int, default=64, help="tokens already in each sequence's KV cache")
    step.add_argument("--dtype", default=None, help="weights dtype of the converted model (default: by backend)")
    step.add_argument("--blas", default="auto", choices=["auto", "shim", "openblas", "reference"],
                      help="the BLAS policy our server would apply (serve --blas)")
    step.add_argument("--no-parts", action="store_true", help="skip the per-layer parts (whole step only)")
    step.add_argument("--evidence-dir", type=Path, default=REPO / "evidence")
    step.add_argument("--reports-dir", type=Path, default=REPO / "reports")
    _bundle_option(contracts)
    report = sub.add_parser("report", help="render reports/ from stored evidence only")
    report.add_argument("--evidence-dir", type=Path, default=REPO / "evidence")
    report.add_argument("--reports-dir", type=Path, default=REPO / "reports")
    return ap


def _ours(args, suite) -> tuple[str, ...]:
    """What every server of ours gets: the suite's own flags, then --dtype, then --server-arg."""
    return (*suite.server_args, *(("--dtype", args.dtype) if args.dtype else ()), *args.server_arg)


def _with(spec: ServerSpec, extra: tuple[str, ...]) -> ServerSpec:
    return replace(spec, extra_args=(*extra, *spec.extra_args)) if spec.kind == "mlx-proof" else spec


def _plan(args, suite, *, evidence_suite: str, servers: list[ServerSpec], default_cases: str,
          repeats: int | None = None, launches: int | None = None):
    from .bench import Plan
    from .publish import bundle_of
    from .suite import select

    cases = suite.load_cases(select(args.cases) or select(default_cases), args)
    extra = (*_ours(args, suite), *suite.server_args_for(cases))
    return Plan(suite=evidence_suite, model=args.model, profile=args.profile, cases=cases,
                servers=[_with(s, extra) for s in servers], repeats=repeats or args.repeats,
                warmup_requests=args.warmup, runner=suite, dtype=args.dtype, order_seed=args.order_seed,
                launches=launches or getattr(args, "launches", None), bundle=bundle_of(args))


def list_suites(console) -> int:
    from suites import KNOWN_SUITES, get_suite

    for name in KNOWN_SUITES:
        suite = get_suite(name)
        how = f"python -m harness {suite.command}" if suite.command else f"python -m harness bench --suite {name}"
        records = ", ".join(suite.record_types)
        console.print(f"[bold]{name}[/bold]: {suite.description}\n  run: {how}; records: {records}")
    return 0


def unwind_on_sigterm() -> None:
    """SIGTERM (timeout, a cancelled CI job, `kill`) would end Python without unwinding, and the
    servers a run launched would outlive it, still holding the CPU the next run measures on. As
    SystemExit it unwinds the launch context managers, which stop them."""
    import signal

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def main(argv: list[str] | None = None) -> int:
    from suites import get_suite

    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    try:
        suite = get_suite(suite_name(argv))
        args = parser(suite).parse_args(argv)
        if args.command == "suites":
            return list_suites(console)
        if args.command == "report":
            from .reporting import render_all
            return render_all(args.evidence_dir, args.reports_dir, console=console)
        if args.command == "tools":
            from .tools_suite import tools
            return tools(args, console=console)
        if args.command == "contracts":
            from .contracts_suite import contracts
            return contracts(args, console=console)
        if args.command == "profile-step":
            from .profile_command import profile_step
            return profile_step(args, console=console)
        if args.command in ("validate", "publish", "regress"):
            from .profile_commands import run_command
            return run_command(args, console=console)
        suite.require_generic(args.command)
        if args.command == "bench":
            from .commands import bench
            args.repeats = args.repeats or suite.default_repeats
            peers = suite.default_peers if args.peers is None else args.peers
            servers = [ServerSpec("ours", "mlx-proof"), *parse_server_list(peers)]
            return bench(_plan(args, suite, evidence_suite=suite.name, servers=servers,
                               default_cases=suite.default_cases), args, console=console)
        args.repeats = args.repeats or PAIRS_PER_DECISION
        if args.command == "compare":
            from .commands import compare
            suite.require_comparable("compare")
            revs = [None if r == "WORKTREE" else r for r in (args.rev_a, args.rev_b)]
            servers = [ServerSpec("A", "mlx-proof", revision=revs[0]), ServerSpec("B", "mlx-proof", revision=revs[1])]
            return compare(_plan(args, suite, evidence_suite="compare", servers=servers,
                                 default_cases=suite.calibration_cases), args, console=console)
        if args.command == "calibrate" and args.pool:
            from .calibrate_pool import pool
            from .reporting import render_all
            code, _ = pool(args.pool, evidence_root=args.evidence_dir, console=console)
            render_all(args.evidence_dir, args.reports_dir, console=console)
            return code
        if args.command == "calibrate":
            from .commands import calibrate
            suite.require_comparable("calibrate")
            args.trials = args.trials or (bounds.QUICK_TRIALS if args.quick else bounds.MIN_TRIALS)
            servers = [ServerSpec("A", "mlx-proof"), ServerSpec("A2", "mlx-proof"),
                       ServerSpec("planted", "mlx-proof", extra_args=("--planted-slowdown", str(args.slowdown)))]
            if args.repeats % math.factorial(len(servers)):
                # Server order shifts speed by a few percent; an unbalanced trial would carry that bias.
                raise ValueError(f"--repeats (pairs per trial) must be a multiple of {math.factorial(len(servers))} "
                                 "so every trial runs each server order equally often")
            # Every trial is one compare decision, so it gets compare's launch balance: its servers
            # are started afresh once per server, each first once (harness/orders.py).
            per_trial = args.launches or len(servers)
            if args.repeats % per_trial:
                raise ValueError(f"--repeats (pairs per trial) must be a multiple of --launches ({per_trial})")
            plan = _plan(args, suite, evidence_suite="calibrate", servers=servers,
                         default_cases=suite.calibration_cases, repeats=args.trials * args.repeats,
                         launches=args.trials * per_trial)
            return calibrate(plan, args, console=console)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    return 2
