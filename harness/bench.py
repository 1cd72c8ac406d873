"""profile → launched servers → suite cases → raw records → statistics → evidence.

One function drives bench, compare and validate: it launches every server once,
warms each up, then runs the repeats interleaved (server order cycling through
every permutation: A B, B A, ...) so slow drift on a shared machine hits all alike.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .evidence import environment
from .loadgen import run_conversations
from .rss import PeakRss
from .servers import ModelFolder, PeerUnavailable, ServerSpec, Target, blas_preload, launch, prefix_cache_state
from .sut import ServerDidNotStart


@dataclass(frozen=True)
class Plan:
    suite: str
    model: str
    profile: str
    cases: list  # suites.throughput.cases.Case
    servers: list[ServerSpec]
    repeats: int = 3
    warmup_requests: int = 1


@dataclass
class Outcome:
    records: list[dict]
    servers: list[dict]  # manifest "servers" entries
    health: dict  # our server's /health
    model: ModelFolder
    started_at: str
    finished_at: str
    environment: dict  # git state and versions as they were when the run started


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolve_model_folder(name: str) -> ModelFolder:
    """Ask our CLI (a process, not an import) where the converted model lives."""
    done = subprocess.run([sys.executable, "-m", "serving", "models", "--resolve", name],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"could not resolve model {name!r}: {done.stderr.strip()[-500:]}")
    return ModelFolder(**json.loads(done.stdout.strip().splitlines()[-1]))


def _server_entry(spec: ServerSpec, *, status: str, argv=(), reason=None, health=None) -> dict:
    return {"label": spec.label, "kind": spec.kind, "revision": spec.revision, "argv": list(argv),
            "status": status, "reason": reason, "health": health,
            "prefix_cache": prefix_cache_state(spec, health=health)}


def _start_all(plan: Plan, stack: contextlib.ExitStack, model: ModelFolder, log_dir: Path,
               say: Callable[[str], None]) -> tuple[list[Target], list[dict], dict]:
    targets, entries, preload, ours_health = [], [], None, {}
    for spec in plan.servers:  # ours first: its /health tells the peers which BLAS to use
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
        if spec.kind == "mlx-proof" and not ours_health:
            ours_health, preload = health, blas_preload(health)
        targets.append(target)
        entries.append(_server_entry(spec, status="ran", argv=target.argv, health=health))
    return targets, entries, ours_health


def _health(target: Target) -> dict | None:
    try:
        return target.server.health()
    except Exception:  # peers' /health may not be JSON; it is informational only
        return None


def runs_on(target: Target, case) -> bool:
    """Peers serve chat only: a case for another endpoint (embeddings) runs on ours alone."""
    return not case.ours_only or target.spec.kind == "mlx-proof"


def _one_run(target: Target, case, repeat: int) -> list[dict]:
    conversations = case.conversations(model=target.model_field, repeat=repeat)
    with PeakRss(target.server.pid) as rss:
        records, wall = run_conversations(target.server.base_url, conversations, case.arrival,
                                          endpoint=case.endpoint)
    tag = {"server": target.spec.label, "case": case.name, "repeat": repeat}
    for rec in records:
        rec.update(tag, concurrency=case.concurrency, rate_rps=case.arrival.rate_rps)
    return [*records, {"type": "run", **tag, "wall_s": wall, "peak_rss_mb": rss.peak_mb}]


def execute(plan: Plan, *, log_dir: Path, console=None) -> Outcome:
    say = (console.log if console else print)
    model = resolve_model_folder(plan.model)
    started, env = now(), environment()
    records: list[dict] = []
    with contextlib.ExitStack() as stack:
        targets, entries, health = _start_all(plan, stack, model, log_dir, say)
        pairs = [(t, c) for t in targets for c in plan.cases if runs_on(t, c)]
        for target, case in ((t, c) for t in targets for c in plan.cases if not runs_on(t, c)):
            say(f"{case.name}: skipped on {target.spec.label} ({target.spec.kind} serves no /v1/{case.endpoint})")
        total = len(pairs) * (plan.repeats + 1)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("warm-up", total=total)
            for target, case in pairs:
                # A conversation warms up whole: its later turns are requests too.
                warm = case.conversations(model=target.model_field, repeat=-1)[: max(plan.warmup_requests, 1)]
                run_conversations(target.server.base_url, warm, case.arrival,
                                  endpoint=case.endpoint)
                progress.advance(task)
            # Every order of the servers in turn: a server's place in the sequence
            # (first after a pause, or right after itself) measurably changes its speed,
            # so no server may always hold the same place.
            orders = list(itertools.permutations(targets))
            for repeat in range(plan.repeats):
                order = orders[repeat % len(orders)]
                for case in plan.cases:
                    for target in (t for t in order if runs_on(t, case)):
                        progress.update(task, description=f"repeat {repeat + 1}/{plan.repeats} {case.name} {target.spec.label}")
                        records.extend(_one_run(target, case, repeat))
                        progress.advance(task)
    return Outcome(records, entries, health, model, started, now(), env)
