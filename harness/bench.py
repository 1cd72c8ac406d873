"""profile → launched servers → a suite's cases → raw records → statistics → evidence.

One function drives bench, compare and validate over any suite (harness/suite.py): it
cuts the repeats into launch blocks, and for each block starts every server afresh (in the
block's start order), warms each up, then runs the block's repeats interleaved, each repeat
running every server once in the order of a balanced design (harness/orders.py), so slow
drift on a shared machine hits all alike and no server holds one place, in a repeat or in
the start order, more than another.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .evidence import environment
from .orders import Design, balanced_orders
from .servers import (ModelFolder, PeerUnavailable, ServerSpec, Target, blas_entry, blas_preload, launch,
                      prefix_cache_state)
from .suite import Suite, check_records
from .sut import ServerDidNotStart


@dataclass(frozen=True)
class Plan:
    suite: str  # the evidence's name for the run: the suite for bench, the command for compare/validate
    model: str
    profile: str
    cases: list  # the suite's cases (each with .name and .describe())
    servers: list[ServerSpec]
    repeats: int = 3
    warmup_requests: int = 1
    runner: Suite | None = None  # the suite that runs the cases (harness/suite.py); None: throughput
    dtype: str | None = None  # weights dtype asked of the catalog (None: the server's default)
    order_seed: int | None = None  # the server-order design's seed (None: drawn, then recorded)
    launches: int | None = None  # launch blocks (None: one per server; harness/orders.py)
    bundle: dict | None = None  # manifest "bundle": set when `validate` runs the suite for a profile


@dataclass
class Outcome:
    records: list[dict]
    servers: list[dict]  # manifest "servers" entries
    health: dict  # our server's /health
    model: ModelFolder
    started_at: str
    finished_at: str
    environment: dict  # git state and versions as they were when the run started
    design: Design | None = None  # the server order of each repeat (None: a suite with its own command)
    roofline: dict | None = None  # the machine's measured roofline and the model's size (harness/roofline.py)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolve_model_folder(name: str, *, dtype: str | None = None) -> ModelFolder:
    """Ask our CLI (a process, not an import) where the converted model lives (in `dtype`, if given)."""
    done = subprocess.run([sys.executable, "-m", "serving", "models", "--resolve", name,
                           *(["--dtype", dtype] if dtype else [])],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"could not resolve model {name!r}: {done.stderr.strip()[-500:]}")
    return ModelFolder(**json.loads(done.stdout.strip().splitlines()[-1]))


def _server_entry(spec: ServerSpec, *, status: str, argv=(), reason=None, health=None, blas=None) -> dict:
    return {"label": spec.label, "kind": spec.kind, "revision": spec.revision, "argv": list(argv),
            "status": status, "reason": reason, "health": health,
            "prefix_cache": prefix_cache_state(spec, health=health),
            "blas": blas or {"setup": spec.blas_setup, "ld_preload": None, "loaded": None}}


def _start_all(specs: list[ServerSpec], plan: Plan, stack: contextlib.ExitStack, model: ModelFolder,
               log_dir: Path, say: Callable[[str], None], preload: str | None
               ) -> tuple[list[Target], list[dict], str | None]:
    """Start `specs` in their order; peers that set up their BLAS like ours get `preload`, or the
    BLAS our first server started here reports."""
    targets, entries = [], []
    for spec in specs:
        say(f"starting {spec.label} ({spec.kind}{' @ ' + spec.revision if spec.revision else ''})")
        try:
            target = stack.enter_context(launch(spec, model=model, profile=plan.profile,
                                                log_dir=log_dir, preload=preload))
        except (PeerUnavailable, ServerDidNotStart) as exc:
            if spec.kind == "mlx-proof":
                raise
            say(f"{spec.label} unavailable: {str(exc).splitlines()[0]}")
            entries.append(_server_entry(spec, status="unavailable", reason=str(exc)[-2000:]))
            continue
        health = _health(target)
        if spec.kind == "mlx-proof" and health and not preload:
            preload = blas_preload(health)
        targets.append(target)
        entries.append(_server_entry(spec, status="ran", argv=target.argv, health=health, blas=blas_entry(target)))
    return targets, entries, preload


def _ours_preload(plan: Plan, model: ModelFolder, log_dir: Path, say: Callable[[str], None]) -> str | None:
    """The BLAS our server preloads, read from one started alone: a launch block may start a peer
    that needs it before ours."""
    if not any(s.kind != "mlx-proof" and s.blas_setup == "same-as-ours" for s in plan.servers):
        return None
    ours = next(s for s in plan.servers if s.kind == "mlx-proof")
    with contextlib.ExitStack() as stack:
        _, _, preload = _start_all([ours], plan, stack, model, log_dir, say, None)
    return preload


def _health(target: Target) -> dict | None:
    try:
        return target.server.health()
    except Exception:  # peers' /health may not be JSON; it is informational only
        return None


def suite_of(plan: Plan) -> Suite:
    """The suite that runs the plan's cases (throughput unless the plan names one)."""
    if plan.runner is not None:
        return plan.runner
    from suites import get_suite
    return get_suite("throughput")


def execute(plan: Plan, *, log_dir: Path, console=None) -> Outcome:
    say = (console.log if console else print)
    suite = suite_of(plan)
    suite.require_generic("bench")
    model = resolve_model_folder(plan.model, dtype=plan.dtype)
    started, env = now(), environment()
    specs = {s.label: s for s in plan.servers}
    design = balanced_orders(list(specs), plan.repeats, seed=plan.order_seed,
                             launches=launch_blocks(plan.launches, servers=len(specs), repeats=plan.repeats))
    blocks = design.blocks()
    preload = _ours_preload(plan, model, log_dir, say) if len(blocks) > 1 else None
    records: list[dict] = []
    first: _FirstBlock | None = None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=None)
        for b, (launch_order, repeats) in enumerate(blocks):
            with contextlib.ExitStack() as stack:
                # A peer that could not start in the first block is not tried again.
                order = [specs[x] for x in launch_order if first is None or x in first.ran]
                targets, started_entries, preload = _start_all(order, plan, stack, model, log_dir, say, preload)
                if first is None:
                    first = _first_block(plan, suite, model, targets, started_entries, say)
                    progress.update(task, total=first.served * (plan.repeats + len(blocks)))
                records += _run_block(plan, suite, design, targets, repeats, progress, task)
    return Outcome(records, first.entries, first.health, model, started, now(), env, design, first.roofline)


@dataclass
class _FirstBlock:
    """What the first launch block settles for the whole run."""
    entries: list[dict]
    health: dict
    ran: set[str]
    roofline: dict | None
    served: int


def _first_block(plan: Plan, suite: Suite, model: ModelFolder, targets: list[Target], started: list[dict],
                 say: Callable[[str], None]) -> _FirstBlock:
    specs = [s.label for s in plan.servers]
    entries = sorted(started, key=lambda e: specs.index(e["label"]))
    # The run's profile flags are those of the first of ours in the plan (A, not the planted
    # one), whichever this block started first.
    health = next((e["health"] for e in entries if e["kind"] == "mlx-proof" and e["health"]), {})
    roofline = _roofline(suite, health, model, say) if suite.name == "throughput" else None
    for target, case in ((t, c) for t in targets for c in plan.cases if not suite.serves(t, c)):
        say(f"{case.name}: skipped on {target.spec.label} ({target.spec.kind} cannot serve it)")
    served = sum(suite.serves(t, c) for t in targets for c in plan.cases)
    return _FirstBlock(entries, health, {t.spec.label for t in targets}, roofline, served)


def _run_block(plan: Plan, suite: Suite, design: Design, targets: list[Target], repeats: range,
               progress: Progress, task) -> list[dict]:
    """One launch block: every started server warmed up, then the block's repeats in their orders."""
    records: list[dict] = []
    by_label = {t.spec.label: t for t in targets}
    for target in targets:
        for case in (c for c in plan.cases if suite.serves(target, c)):
            progress.update(task, description=f"warm-up {target.spec.label} {case.name}")
            suite.warm_up(target, case, plan.warmup_requests)
            progress.advance(task)
    for repeat in repeats:
        for case in plan.cases:
            for label in (x for x in design.orders[repeat] if x in by_label and suite.serves(by_label[x], case)):
                progress.update(task, description=f"repeat {repeat + 1}/{plan.repeats} {case.name} {label}")
                ran_now = suite.run(by_label[label], case, repeat)
                check_records(suite, ran_now)
                records.extend(ran_now)
                progress.advance(task)
    return records


def launch_blocks(asked: int | None, *, servers: int, repeats: int) -> int:
    """How many times the servers are started afresh (harness/orders.py says why): as asked, or by
    default one block per server (each starts first once), never more blocks than repeats."""
    if servers < 2:
        return 1
    return max(1, min(asked or servers, repeats))


def _roofline(suite: Suite, health: dict, model: ModelFolder, say: Callable[[str], None]) -> dict:
    """Measured once the servers are up and idle, with the BLAS our server preloaded."""
    from .roofline import roofline

    say("measuring the roofline (GEMM FLOP/s, memory bandwidth) with our server's BLAS")
    try:
        return roofline(preload=blas_preload(health), model_folder=Path(model.path), dtype=model.dtype)
    except (RuntimeError, ValueError, OSError) as exc:  # recorded, never fatal: the bench still stands
        say(f"roofline not measured: {exc}")
        return {"error": str(exc)[-1000:]}
