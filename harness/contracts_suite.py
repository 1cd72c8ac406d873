"""`python -m harness contracts`: real client programs against our server, with evidence.

The suite's parts live in suites/contracts/ (client files, drivers, recording proxy, SDK-type
conformance, summary); this module is the command around them: the served models, a progress
bar, the manifest, the evidence directory (with each client's artifacts: screenshots,
transcripts) and the console matrix.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .bench import Outcome, Plan, now
from .evidence import environment
from .publish import Described, bundle_of, path_replacements, portable, publish_block, split_list

SUITE = "contracts"
INTERLEAVING = "none: one case at a time, client files in name order, cases in file order"
MARK = {"pass": "[green]pass[/green]", "conditional": "[yellow]conditional[/yellow]", "fail": "[red]fail[/red]",
        "blocked": "[magenta]blocked[/magenta]"}


def served_overrides(pairs: list[str]) -> dict[str, str]:
    """--serve KIND=MODEL pairs, checked against the kinds the client files know."""
    from suites.contracts.cases import MODELS, CaseFileError

    out = {}
    for pair in pairs:
        kind, sep, model = pair.partition("=")
        if not sep or not model.strip():
            raise CaseFileError(f"--serve takes KIND=MODEL, not {pair!r}")
        if kind not in MODELS:
            raise CaseFileError(f"--serve: unknown model kind {kind!r} (known: {', '.join(MODELS)})")
        out[kind] = model.strip()
    return out


def served_elsewhere(manifest: dict) -> str | None:
    """Why a contracts run does not speak for the suite as shipped: one of its model kinds was
    served on another model (--serve) than the one the client files are judged on."""
    from suites.contracts.cases import MODELS

    for server in manifest.get("servers") or []:
        kind = str(server.get("label", "")).removeprefix("ours-")
        served = ((server.get("health") or {}).get("model") or {}).get("id")
        if kind in MODELS and kind != "vision" and served and served != MODELS[kind]:
            return f"its {kind} cases ran on {served}, not the suite's {MODELS[kind]}"
    return None


def print_matrix(block: dict, *, console: Console) -> None:
    table = Table(title="client contracts (client x capability)")
    table.add_column("client")
    for cap in block["capabilities"]:
        table.add_column(cap)
    cells = {(c["client"], c["capability"]): c for c in block["cells"]}
    for client in block["clients"]:
        table.add_row(client, *[MARK[cells[(client, cap)]["status"]] if (client, cap) in cells else "-"
                                for cap in block["capabilities"]])
    console.print(table)
    for c in block["cells"]:
        if c["status"] != "pass":
            cond = f" (condition: {c['condition']})" if c["condition"] else ""
            console.print(f"{c['client']} / {c['capability']}: {c['status']}{cond}: {c['reason']}")


def _server_entry(served) -> dict:
    from .servers import ServerSpec, prefix_cache_state

    spec = ServerSpec(f"ours-{served.kind}", "mlx-proof")
    return {"label": spec.label, "kind": spec.kind, "revision": None, "argv": list(served.argv),
            "status": "ran", "reason": None, "health": served.health or None,
            "prefix_cache": prefix_cache_state(spec, health=served.health)}


def contracts(args, *, console: Console) -> int:
    from suites.contracts.cases import CaseFileError, load_clients, select
    from suites.contracts.session import run_clients, served_models

    try:
        clients = select(load_clients(), names=split_list(args.clients) or None, tiers=split_list(args.tiers) or None,
                         capabilities=split_list(args.capabilities) or None, models=split_list(args.models) or None)
        overrides = served_overrides(getattr(args, "serve", []))
    except CaseFileError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    if not clients:
        console.print("[red]error:[/red] no client case matches the selection")
        return 2
    total = sum(len(c.cases) for c in clients)
    console.log(f"{total} cases from {len(clients)} clients: {', '.join(c.id for c in clients)}")
    root = Path(tempfile.mkdtemp(prefix="mlx-proof-contracts-"))
    started, env = now(), environment()
    try:
        with served_models(clients, root=root, profile=args.profile, models=overrides, log=console.log) as served:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task("contracts", total=total)

                def done(rec: dict) -> None:
                    progress.update(task, advance=1, description=f"{rec['client']} {rec['capability']}: {rec['status']}")

                records = run_clients(clients, served, root=root, on_done=done)
            default = served.get("default") or next(iter(served.values()))
            outcome = Outcome(records, [_server_entry(s) for s in served.values()], default.health, default.folder,
                              started, now(), env)
        plan = Plan(suite=SUITE, model=outcome.model.model_id, profile=args.profile,
                    cases=[Described(c.describe()) for c in clients], servers=[], repeats=1, warmup_requests=0,
                    bundle=bundle_of(args))
        directory, summary = publish_contracts(plan, outcome, evidence_root=args.evidence_dir,
                                               artifacts=root / "artifacts", workdir=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary_block = summary["contracts"]
    print_matrix(summary_block, console=console)
    console.print(f"evidence: {directory}")
    from .reporting import render_all
    render_all(args.evidence_dir, args.reports_dir, console=console)
    return 1 if summary_block["totals"]["fail"] else 0


def publish_contracts(plan: Plan, outcome: Outcome, *, evidence_root: Path, artifacts: Path,
                      workdir: Path | None = None) -> tuple[Path, dict]:
    from suites.contracts.summary import summarize_contracts

    # The run's scratch folder (the clients' projects) is as machine-specific as the checkout.
    replacements = path_replacements({str(workdir): "<workdir>"} if workdir is not None else None)
    records = portable(outcome.records, replacements=replacements)
    directory, summary = publish_block(plan, outcome, evidence_root=evidence_root, block_name="contracts",
                                       block=summarize_contracts(records), interleaving=INTERLEAVING,
                                       records=records)
    if artifacts.is_dir() and any(artifacts.rglob("*")):
        shutil.copytree(artifacts, directory / "artifacts")
        scrub_paths(directory / "artifacts", replacements)
    return directory, summary


def scrub_paths(folder: Path, replacements: dict[str, str]) -> None:
    """Transcripts quote PATH and the clients' own paths: no machine's home or checkout is kept."""
    for path in folder.rglob("*.txt"):
        text = path.read_text(errors="replace")
        for prefix, name in replacements.items():
            text = text.replace(prefix, name)
        path.write_text(text)

