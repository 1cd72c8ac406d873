"""The suite contract: case files (data) → runner (HTTP only) → raw records → summary statistics.

A suite is one object of this shape, registered by name in suites/__init__.py. The commands
(bench, compare, validate/calibrate) are written once, over any suite: they launch the
servers, warm each up, run the repeats in a balanced server order, then hand the raw
records to the suite's summary and write the evidence. A suite knows nothing of servers
beyond a base URL and the "model" field to send.

Adding a case is editing the suite's case file; adding a suite is a folder under suites/
with such an object and one line in the registry.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Case(Protocol):
    """What the commands need of a case; anything else is the suite's own business."""

    name: str

    def describe(self) -> dict: ...  # the manifest's workload entry


def _no_options(parser: argparse.ArgumentParser) -> None:
    return None


def _no_comparisons(servers: list[dict]) -> list:
    return []


def _serves_all(target, case) -> bool:
    return True


def _no_case_args(cases: list) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    # The raw record types it writes (harness/schemas/raw_record.schema.json, harness/EVIDENCE.md).
    record_types: tuple[str, ...]
    # (selection, parsed args) → cases read from the suite's case files (selection: names or tags).
    load_cases: Callable[[list[str], argparse.Namespace], list] | None = None
    # (target, case, requests) → None: warm-up, never recorded (target: harness.servers.Target).
    warm_up: Callable[..., None] | None = None
    # (target, case, repeat) → raw records, each naming its server ("server"), case and repeat.
    run: Callable[..., list[dict]] | None = None
    # (records, *, comparisons, cases) → the summary body: "groups", "comparisons" and the suite's own block.
    summarize: Callable[..., dict] | None = None
    # (summary, manifest servers, console) → None: the console table.
    print_summary: Callable[..., None] | None = None
    default_cases: str = "default"  # bench's --cases when none is given (names or tags, comma-separated)
    calibration_cases: str = "default"  # compare's and validate's --cases when none is given
    default_peers: str = ""  # bench's peers when --peers is not given
    default_repeats: int = 3
    # The metric compare and calibrate decide on; None: the suite cannot be compared across servers.
    compared_metric: str | None = None
    # (records, metric) → {(server, repeat): (that metric, failed)}: what calibrate's trials decide on.
    per_repeat: Callable[[list[dict], str], dict] | None = None
    # (manifest servers) → the comparisons bench reports.
    bench_comparisons: Callable[[list[dict]], list] = _no_comparisons
    options: Callable[[argparse.ArgumentParser], None] = _no_options  # its own command-line options
    # Default server arguments (before any the user passes), e.g. a cache that would confound the suite.
    server_args: tuple[str, ...] = field(default=())
    # (chosen cases) → more arguments for our servers (a model served beside the chat model).
    server_args_for: Callable[[list], tuple[str, ...]] = _no_case_args
    # (target, case) → whether that server can run that case at all (peers serve chat only).
    serves: Callable[[Any, Any], bool] = _serves_all
    # A suite that drives real client programs or needs one server of its own runs through its own
    # command instead of the generic ones; the name of that command.
    command: str | None = None

    @property
    def generic(self) -> bool:
        """Whether bench (and compare, with compared_metric) can run it."""
        return self.run is not None and self.summarize is not None and self.load_cases is not None

    def require_generic(self, command: str) -> None:
        if not self.generic:
            raise ValueError(f"suite {self.name!r} runs through its own command (`python -m harness "
                             f"{self.command or self.name}`), not through {command}")

    def require_comparable(self, command: str) -> None:
        self.require_generic(command)
        if self.compared_metric is None or self.per_repeat is None:
            raise ValueError(f"suite {self.name!r} has no metric to compare across servers, so {command} cannot "
                             f"run it")


def select(text: str | None) -> list[str] | None:
    """A comma-separated --cases value; None (or blank) for the suite's default."""
    names = [p.strip() for p in (text or "").split(",") if p.strip()]
    return names or None


def select_cases(cases: list, names: list[str] | None, *, noun: str = "case") -> list:
    """The cases whose name or any tag is in `names` (all of them when None), in file order.

    A name that is neither a case nor a tag is an error, not an empty run: the message lists
    every known name and tag."""
    if names is None:
        return cases
    chosen = [c for c in cases if c.name in names or set(c.tags) & set(names)]
    known = sorted({c.name for c in cases} | {t for c in cases for t in c.tags})
    unknown = [s for s in names if s not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown {noun} or tag {', '.join(unknown) or names}; known: {', '.join(known)}")
    return chosen


def check_records(suite: Suite, records: Sequence[dict[str, Any]]) -> None:
    """A runner must write only its declared record types."""
    stray = sorted({r.get("type") for r in records} - set(suite.record_types), key=str)
    if stray:
        raise ValueError(f"suite {suite.name!r} wrote record types {stray}; it declares {list(suite.record_types)}")
