"""Render reports/ from every stored evidence run (never from a live run)."""

from __future__ import annotations

from pathlib import Path

from .evidence import iter_runs
from .report import render


def render_all(evidence_root: Path, reports_dir: Path, *, console, committed_only: bool = False) -> int:
    """index.html (the published matrix first, then every run) and summary.md. With committed_only
    (`publish`): only git-tracked runs, and published.md/published.json beside them."""
    from . import published

    runs = list(iter_runs(evidence_root))
    if committed_only:
        runs = published.tracked_runs(runs, evidence_root)
    if not runs:
        console.print(f"no evidence under {evidence_root}; run `nox -s bench` first")
        return 1
    matrix = published.compute(runs)
    html, md = render(runs, reports_dir, preface_html=published.html_section(matrix, evidence_root))
    console.print(f"report: {html} and {md} ({len(runs)} runs)")
    if committed_only:
        for path in published.write(matrix, evidence_root=evidence_root, reports_dir=reports_dir):
            console.print(f"published: {path}")
    return 0
