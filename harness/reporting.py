"""Render reports/ from every stored evidence run (never from a live run)."""

from __future__ import annotations

from pathlib import Path

from .evidence import iter_runs
from .report import render


def render_all(evidence_root: Path, reports_dir: Path, *, console) -> int:
    runs = list(iter_runs(evidence_root))
    if not runs:
        console.print(f"no evidence under {evidence_root}; run `nox -s bench` first")
        return 1
    html, md = render(runs, reports_dir)
    console.print(f"report: {html} and {md} ({len(runs)} runs)")
    return 0
