"""The suite registry: every suite by name (the contract is harness/suite.py).

Each entry names the module whose SUITE object is the suite; modules are imported
only when their suite is asked for, so listing the suites costs nothing.
"""

from __future__ import annotations

import importlib
from pathlib import Path

SUITES_DIR = Path(__file__).parent
REGISTRY = {
    "throughput": "suites.throughput.suite",
    "divergence": "suites.divergence.suite",
    "tools": "suites.tools.suite",
    "contracts": "suites.contracts.suite",
}
KNOWN_SUITES = tuple(REGISTRY)


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown suite {name!r}; known suites: {', '.join(KNOWN_SUITES)}")


def get_suite(name: str):
    """The registered suite called `name` (a harness.suite.Suite); ValueError listing the known ones."""
    if name not in REGISTRY:
        raise _unknown(name)
    suite = importlib.import_module(REGISTRY[name]).SUITE
    if suite.name != name:
        raise RuntimeError(f"{REGISTRY[name]} registers suite {suite.name!r} under the name {name!r}")
    return suite


def suite_dir(name: str) -> Path:
    if name not in REGISTRY:
        raise _unknown(name)
    return SUITES_DIR / name
