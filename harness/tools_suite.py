"""`python -m harness tools`: launch our server on a model, send BFCL cases over HTTP, write evidence.

The suite's parts live in suites/tools/ (data, checker, runner, summary); this module is the
command around them: one server, a progress bar, the manifest, the evidence directory and the
console table. Like every command, it sees the server only as a process and a URL.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .bench import Outcome, Plan, now, resolve_model_folder
from .evidence import environment
from .publish import Described, bundle_of, publish_block, split_list
from .report_tools import mode_label
from .servers import ServerSpec, launch, prefix_cache_state

SUITE = "tools"
INTERLEAVING = ("none: one request per case and mode, closed loop, cases in file order, modes in the given order; "
                "then the scenarios (unless --no-scenarios), one request at a time, in file order")





def _health(target) -> dict:
    try:
        return target.server.health()
    except Exception:  # informational; the manifest says "unknown" where it is missing
        return {}


def _fmt_cell(cell: dict) -> str:
    if not cell["applicable"]:
        return "n/a (not applicable)"
    if cell["accuracy"] is None:
        return f"n/a (n={cell['n']})"
    errors = f", {cell['errors']} errors" if cell["errors"] else ""
    return (f"{cell['accuracy']:.1%} [{cell['ci_low']:.1%}, {cell['ci_high']:.1%}] "
            f"({cell['correct']}/{cell['n']}{errors})")


def print_scenarios(block: dict, *, confidence: float, console: Console) -> None:
    table = Table(title=f"tool scenarios [{confidence:.0%} Wilson] (passed/n)")
    for col in ("dialect", "passed", "errors"):
        table.add_column(col)
    for c in [*block["dialects"], block["overall"]]:
        rate = "n/a" if c["rate"] is None else f"{c['rate']:.0%} [{c['ci_low']:.0%}, {c['ci_high']:.0%}]"
        table.add_row("all" if c["dialect"] == "*" else c["dialect"], f"{rate} ({c['passed']}/{c['n']})",
                      str(c["errors"]))
    console.print(table)
    for f in block["failed"]:
        console.print(f"scenario {f['id']} ({f['status']}): {f['reason']}")


def print_tools(block: dict, *, console: Console) -> None:
    modes = [c["mode"] for c in block["overall"]]
    table = Table(title=f"tool-call accuracy [{block['confidence']:.0%} {block['method']}] (correct/n)")
    table.add_column("category")
    for mode in modes:
        table.add_column(mode_label(mode))
    cells = {(c["category"], c["mode"]): c for c in block["cells"]}
    for category in dict.fromkeys(c["category"] for c in block["cells"]):
        table.add_row(category, *[_fmt_cell(cells[(category, m)]) if (category, m) in cells else "not run"
                                  for m in modes])
    table.add_row("all", *[_fmt_cell(c) for c in block["overall"]])
    console.print(table)
    for pf in block["parse_fidelity"]:
        label = "all modes" if pf["mode"] == "*" else f"mode {pf['mode']}"
        value = ("n/a" if pf["fidelity"] is None else
                 f"{pf['fidelity']:.1%} [{pf['ci_low']:.1%}, {pf['ci_high']:.1%}]")
        console.print(f"parse fidelity, {label}: {value} ({pf['clean']}/{pf['n']} responses with a call "
                      "came back as structured calls with no markup left)")
    for sv in block.get("schema_validity", []):
        value = "n/a" if sv["rate"] is None else f"{sv['rate']:.1%} [{sv['ci_low']:.1%}, {sv['ci_high']:.1%}]"
        console.print(f"schema-valid calls, mode {sv['mode']}: {value} ({sv['valid']}/{sv['n']} requests)")
    if sc := block.get("scenarios"):
        print_scenarios(sc, confidence=block["confidence"], console=console)
    for d in block["differences"]:
        p = "n/a" if d["p_value"] is None else f"{d['p_value']:.3g}"
        console.print(f"{d['category'] if d['category'] != '*' else 'all'}: {d['a']} - {d['b']} = "
                      f"{d['difference']:+.1%} over {d['n_pairs']} cases ({d['a_only']} right only under {d['a']}, "
                      f"{d['b_only']} only under {d['b']}; McNemar p={p})")


def _scenarios(target, label: str, progress: Progress) -> list[dict]:
    """The API-contract scenarios, on the same server after the cases (nothing else in flight)."""
    from suites.tools.scenarios import load, run_scenarios

    settings = load()
    task = progress.add_task("scenarios", total=len(settings.scenarios))
    passed = {"n": 0}

    def done(record: dict) -> None:
        passed["n"] += record["passed"] is True
        progress.update(task, advance=1, description=f"scenarios: {passed['n']} passed")

    return run_scenarios(target.server.base_url, model=target.model_field, server=label, settings=settings,
                         on_done=done)


def _run(args, work, *, console: Console):
    from suites.tools.runner import run_cases

    model = resolve_model_folder(args.model)
    started, env = now(), environment()
    spec = ServerSpec("ours", "mlx-proof", extra_args=tuple(args.server_arg or ()))
    console.log(f"starting ours (mlx-proof) on {model.model_id}" +
                (f" with {' '.join(spec.extra_args)}" if spec.extra_args else ""))
    with launch(spec, model=model, profile=args.profile, log_dir=args.log_dir, preload=None) as target:
        health = _health(target)
        units = work.units()
        tally = {"correct": 0, "judged": 0, "errors": 0}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("tools", total=len(units))

            def done(record: dict) -> None:
                tally["correct"] += record["correct"] is True
                tally["judged"] += record["correct"] is not None
                tally["errors"] += record["status"] == "error"
                progress.update(task, advance=1, description=(
                    f"{record['category']} {record['mode']}: {tally['correct']}/{tally['judged']} correct, "
                    f"{tally['errors']} errors"))

            records = run_cases(target.server.base_url, units, model=target.model_field,
                                max_tokens=work.settings.max_tokens, stream=work.settings.stream,
                                concurrency=args.concurrency or work.settings.concurrency,
                                timeout_s=work.settings.timeout_s, server=spec.label, on_done=done)
            if not getattr(args, "no_scenarios", False):
                records += _scenarios(target, spec.label, progress)
        entry = {"label": spec.label, "kind": spec.kind, "revision": None, "argv": list(target.argv),
                 "status": "ran", "reason": None, "health": health or None,
                 "prefix_cache": prefix_cache_state(spec, health=health)}
    return Outcome(records, [entry], health, model, started, now(), env)


def publish_tools(plan: Plan, outcome: Outcome, *, evidence_root: Path) -> tuple[Path, dict]:
    from suites.tools.summary import summarize_tools

    return publish_block(plan, outcome, evidence_root=evidence_root, block_name="tools",
                         block=summarize_tools(outcome.records), interleaving=INTERLEAVING)


def tools(args, *, console: Console) -> int:
    from suites.tools.cases import build_workload, check_modes, load_settings, select
    from suites.tools.data import DataError, fetch

    settings = load_settings()
    categories = select(settings, split_list(args.categories))
    modes = check_modes(split_list(args.modes) or settings.modes)
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    try:
        data = fetch(settings.source, [m for c in categories for m in c.members()])
    except DataError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    work = build_workload(settings, data, categories=categories, limit=args.limit, modes=modes)
    console.log(f"{len(work.cases)} cases x {len(modes)} modes from {data.wheel.name} "
                f"({', '.join(f'{c.name} {sum(k.category == c.name for k in work.cases)}' for c in categories)})")
    outcome = _run(args, work, console=console)
    plan = Plan(suite=SUITE, model=args.model, profile=args.profile,
                cases=[Described(e) for e in work.describe()], servers=[], repeats=1, warmup_requests=0,
                bundle=bundle_of(args))
    directory, summary = publish_tools(plan, outcome, evidence_root=args.evidence_dir)
    print_tools(summary["tools"], console=console)
    console.print(f"evidence: {directory}")
    from .reporting import render_all
    render_all(args.evidence_dir, args.reports_dir, console=console)
    return 0
