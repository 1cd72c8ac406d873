"""The profile commands: validate (run what a profile's gates read, then decide), publish (the
matrix from committed evidence) and regress (compare the working tree with the last code that
published text-default)."""

from __future__ import annotations

import argparse
import secrets
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from .servers import REPO_ROOT

DEFAULT_MODEL = "smollm2-135m"
REGRESS_PROFILE = "text-default"
# How validate runs each suite: the command, and whether it takes --model (contracts serves its own).
SUITE_COMMANDS = {"throughput": (["bench", "--suite", "throughput"], True),
                  "divergence": (["bench", "--suite", "divergence"], True),
                  "tools": (["tools"], True),
                  "contracts": (["contracts"], False)}


def _evidence_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--evidence-dir", type=Path, default=REPO_ROOT / "evidence")
    p.add_argument("--reports-dir", type=Path, default=REPO_ROOT / "reports")


def add_parsers(sub, *, compare_repeats: int, threshold: float) -> None:
    from .profiles import PROFILES_FILE

    v = sub.add_parser("validate", help="run the suites a profile's gates read, on one model; promote, "
                                        "promote-with-warning or hold (exit 0, 3 or 1)")
    v.add_argument("--profile", required=True, help="a profile of serving/profiles.toml")
    v.add_argument("--model", default=None, help="catalog id (default: the profile's first model)")
    v.add_argument("--from-evidence", action="store_true",
                   help="run nothing: decide on the evidence already stored (every run, newest eligible first)")
    v.add_argument("--as-of", default=None,
                   help="ISO time evidence ages count back from (default: now)")
    v.add_argument("--dry-run", action="store_true", help="print the suite commands it would run, and stop")
    v.add_argument("--suite-arg", action="append", default=[], metavar="SUITE=ARG",
                   help="add ARG to SUITE's command after the profile's own arguments (the last value wins), e.g. "
                        "--suite-arg=throughput=--repeats=2 for a small CI run; recorded in each run's manifest")
    v.add_argument("--profiles-file", type=Path, default=PROFILES_FILE, help=argparse.SUPPRESS)
    _evidence_options(v)
    v.add_argument("--log-dir", type=Path, default=REPO_ROOT / ".nox" / "server-logs")
    p = sub.add_parser("publish", help="reports/published.md, published.json and index.html from committed evidence")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the committed published.md differs from a regeneration")
    _evidence_options(p)
    r = sub.add_parser("regress", help="compare the working tree with a base revision; exit 1 on a regression")
    r.add_argument("--base", default=None,
                   help=f"base revision (default: the code behind the evidence that publishes {REGRESS_PROFILE} "
                        f"for {DEFAULT_MODEL}; else HEAD~1)")
    r.add_argument("--candidate", default="WORKTREE", help="candidate revision (default: the working tree)")
    r.add_argument("--published-evidence", type=Path, default=REPO_ROOT / "evidence",
                   help="the committed evidence the default base is read from (default: evidence/)")
    r.add_argument("--model", default=DEFAULT_MODEL)
    r.add_argument("--cases", default=None, help="throughput cases (default: the calibration case, `validation`)")
    r.add_argument("--repeats", type=int, default=compare_repeats,
                   help=f"interleaved pairs (default {compare_repeats}: the rule calibrate checks)")
    r.add_argument("--threshold", type=float, default=threshold,
                   help=f"the regression rule's materiality threshold (default {threshold}: the rule calibrate checks)")
    _evidence_options(r)


def run_command(args, *, console) -> int:
    if args.command == "validate":
        return validate(args, console=console)
    if args.command == "publish":
        return publish(args, console=console)
    return regress(args, console=console)


# validate -----------------------------------------------------------------------------------

def suite_argv(suite: str, extra: tuple[str, ...], *, model: str, profile: str, args, bundle: str) -> list[str]:
    command, takes_model = SUITE_COMMANDS[suite]
    return [*command, *(["--model", model] if takes_model else []), "--profile", profile, *extra,
            "--evidence-dir", str(args.evidence_dir), "--reports-dir", str(args.reports_dir), "--bundle", bundle,
            *(["--log-dir", str(args.log_dir)] if suite != "contracts" else [])]


def new_bundle_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def extra_suite_args(pairs: list[str], needed: list[str]) -> dict[str, tuple[str, ...]]:
    extra: dict[str, list[str]] = {}
    for pair in pairs:
        suite, sep, arg = pair.partition("=")
        if not sep or suite not in needed:
            raise ValueError(f"--suite-arg {pair!r}: expected SUITE=ARG with SUITE one of {', '.join(needed)}")
        extra.setdefault(suite, []).append(arg)
    return {k: tuple(v) for k, v in extra.items()}


def plan_suites(profile, model: str, args, bundle: str) -> list[list[str]]:
    from suites.contracts.cases import MODELS

    if "contracts" in profile.needed_suites() and model != MODELS["default"]:
        raise ValueError(f"profile {profile.name} reads the contracts suite, which serves its text cases on "
                         f"{MODELS['default']} (its tool cases on {MODELS['tools']} and {MODELS['agent']}) and files its evidence under "
                         f"{MODELS['default']}: validate it with --model {MODELS['default']}")
    extra = extra_suite_args(getattr(args, "suite_arg", []), profile.needed_suites())
    return [suite_argv(s, (*profile.suites[s], *extra.get(s, ())), model=model, profile=profile.name, args=args,
                       bundle=bundle)
            for s in profile.needed_suites()]


def print_decision(decision, *, console) -> None:
    from .gates import EXIT_CODES, FAIL, MISSING

    console.print(f"[bold]{decision.profile} on {decision.model}[/bold] (evidence ages count from {decision.now})")
    colour = {"pass": "green", FAIL: "red", MISSING: "magenta"}
    for r in decision.results:
        value = f"{r.value:.4g}" if isinstance(r.value, float) else ("" if r.value is None else str(r.value))
        detail = f"{value} ({r.where}; run {r.run_id})" if r.status != MISSING else r.reason
        console.print(f"  [{colour[r.status]}]{r.status:7}[/{colour[r.status]}] {r.level:8} {r.gate.text}: {detail}",
                      soft_wrap=True)
    shade = {"promote": "green", "promote-with-warning": "yellow", "hold": "red"}[decision.decision]
    console.print(f"[bold {shade}]{decision.decision}[/bold {shade}] (exit {EXIT_CODES[decision.decision]})")


def validate(args, *, console) -> int:
    from . import cli
    from .evidence import iter_runs
    from .gates import EXIT_CODES, evaluate, when
    from .profiles import catalog_pins, load_profiles

    profiles = load_profiles(args.profiles_file)
    profile = profiles.get(args.profile)
    model = args.model or profile.models[0]
    bundle = None
    if not args.from_evidence:
        bundle = new_bundle_id()
        commands = plan_suites(profile, model, args, bundle)
        for argv in commands:
            console.print(f"[bold]validate {profile.name} on {model}[/bold]: python -m harness {' '.join(argv)}")
        if args.dry_run:
            return 0
        for argv in commands:
            try:
                code = cli.main(argv)
            except Exception as exc:  # noqa: BLE001 - a suite that cannot run leaves its gates without evidence
                console.print(f"[red]{' '.join(argv[:3])} failed: {exc}[/red]")
                continue
            if code not in (0, 1):  # 1: the suite ran and found failures, which the gates read
                console.print(f"[yellow]{argv[0]} exited {code}; gates it feeds will have no evidence[/yellow]")
    runs = [r for r in iter_runs(args.evidence_dir)
            if bundle is None or (r.manifest.get("bundle") or {}).get("id") == bundle]
    now = when(args.as_of) if args.as_of else datetime.now(timezone.utc)
    decision = evaluate(profile, model, runs, profiles, now=now, pins=catalog_pins())
    if bundle:
        console.print(f"evidence bundle {bundle}: {', '.join(r.manifest['run_id'] for r in runs) or 'no runs'}")
    print_decision(decision, console=console)
    return EXIT_CODES[decision.decision]


# publish ------------------------------------------------------------------------------------

def publish(args, *, console) -> int:
    from . import published
    from .evidence import iter_runs
    from .reporting import render_all

    if not args.check:
        return render_all(args.evidence_dir, args.reports_dir, console=console, committed_only=True)
    runs = published.tracked_runs(list(iter_runs(args.evidence_dir)), args.evidence_dir)
    fresh = published.markdown(published.compute(runs), args.evidence_dir)
    target = Path(args.reports_dir) / "published.md"
    if target.exists() and target.read_text(encoding="utf-8") == fresh:
        console.print(f"{target} matches the committed evidence")
        return 0
    console.print(f"[red]{target} differs from a regeneration from the committed evidence[/red]: "
                  "run `nox -s publish` and commit reports/")
    return 1


# regress ------------------------------------------------------------------------------------

def _git(*argv: str) -> str | None:
    done = subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def published_base(evidence_root: Path, *, console) -> str:
    """The commit whose code produced the evidence that publishes text-default on the default
    model: the newest clean commit among the runs that decided it. HEAD~1 when there is none."""
    from . import published
    from .evidence import iter_runs

    runs = published.tracked_runs(list(iter_runs(evidence_root)), evidence_root)
    matrix = published.compute(runs)
    decision = next((d for d in matrix.decisions if d.profile == REGRESS_PROFILE and d.model == DEFAULT_MODEL), None)
    if decision is not None and decision.published:
        deciding = [r for r in runs if r.manifest["run_id"] in decision.runs()]
        for run in sorted(deciding, key=lambda r: r.manifest["finished_at"], reverse=True):
            commit = run.manifest["git"]["commit"]
            if not run.manifest["git"]["dirty"] and _git("cat-file", "-e", f"{commit}^{{commit}}") is not None:
                console.print(f"base: {commit[:12]}, the code of run {run.manifest['run_id']}, which (with "
                              f"{', '.join(x for x in decision.runs() if x != run.manifest['run_id']) or 'no other run'}) "
                              f"publishes {REGRESS_PROFILE} for {DEFAULT_MODEL} ({decision.decision})")
                return commit
        why = "its deciding runs were made from a dirty tree or commits this clone lacks"
    else:
        why = (f"the committed evidence holds {REGRESS_PROFILE} for {DEFAULT_MODEL}" if decision
               else f"no decision for {REGRESS_PROFILE} on {DEFAULT_MODEL}")
    console.print(f"[yellow]no published base: {why}; comparing against HEAD~1 instead[/yellow]")
    return "HEAD~1"


def regress(args, *, console) -> int:
    from . import cli

    base = args.base or published_base(args.published_evidence, console=console)
    argv = ["compare", base, args.candidate, "--model", args.model, "--repeats", str(args.repeats),
            "--threshold", str(args.threshold), "--evidence-dir", str(args.evidence_dir),
            "--reports-dir", str(args.reports_dir), *(["--cases", args.cases] if args.cases else [])]
    console.print(f"regress: python -m harness {' '.join(argv)}")
    return cli.main(argv)
