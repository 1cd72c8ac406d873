"""Suites are registered by name: case files (data) plus a small runner each."""

from __future__ import annotations

from pathlib import Path

SUITES_DIR = Path(__file__).parent
KNOWN_SUITES = ("throughput", "tools")


def suite_dir(name: str) -> Path:
    if name not in KNOWN_SUITES:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(KNOWN_SUITES)}")
    return SUITES_DIR / name
