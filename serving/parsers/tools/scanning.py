"""The one incremental machine every tool-call format runs on.

A format is a few recognisers. Each names its triggers (markers that may appear anywhere, and
characters that count only at the start of a line) and a candidate function that looks at the
text from a trigger onwards and answers with a Step, or None while it cannot tell yet.

Streaming and whole-text parsing are the same loop; the whole text is just one big chunk. So
they agree for any chunking as long as every candidate is monotone: it may answer None on a
prefix, but a Step it gives on a prefix must be the Step it would give on any longer text.
`final` only says no more text will come, so a candidate still waiting must decide.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Union

from .events import Event, ParseResult, ToolCall, ToolCallArgs, ToolCallEnd
from .events import ToolCallStart, collect
from .whitespace import Whitespace


@dataclass(frozen=True)
class Text:
    """The first `size` characters are plain text."""

    size: int


@dataclass(frozen=True)
class Calls:
    """The first `size` characters are markup holding `calls` (none: stray markup to drop)."""

    size: int
    calls: tuple[ToolCall, ...] = ()


Step = Union[Text, Calls, None]  # None: cannot tell yet, send more text
Candidate = Callable[[str, bool], Step]


@dataclass(frozen=True)
class Recogniser:
    candidate: Candidate
    markers: tuple[str, ...] = ()
    line_chars: str = ""

    def first_trigger(self, buf: str, line_start: bool, limit: int) -> int:
        """Where this recogniser might start, if before limit; else limit.

        Each feed re-scans the held text, so the search stays in C (str.find, re.search) and
        stops at limit, or a long held call would cost quadratic Python time."""
        for marker in self.markers:
            found = buf.find(marker, 0, limit + len(marker))
            limit = min(limit, found if found != -1 else _partial_tail(buf, marker))
        if self.line_chars:
            pattern = _line_pattern(self.line_chars)
            m = pattern.search(buf, 0, limit + 1)
            if m and m.start() == 0 and buf[0] != "\n" and not line_start:  # ^ matched mid-line
                m = pattern.search(buf, 1, limit + 1)
            if m:
                limit = min(limit, m.start(1))
        return limit

    def fires_at_start(self, buf: str, line_start: bool) -> bool:
        return any(m.startswith(buf[: len(m)]) for m in self.markers) or (
            line_start and buf[0] in self.line_chars
        )


@functools.lru_cache(maxsize=None)
def _line_pattern(chars: str) -> re.Pattern:
    return re.compile(r"(?:^|\n)[ \t]*([" + re.escape(chars) + "])")


def _partial_tail(buf: str, marker: str) -> int:
    """Start of the longest tail of buf that could grow into marker; len(buf) if none."""
    for size in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:size]):
            return len(buf) - size
    return len(buf)


def settle(found, otherwise: Step) -> Step:
    """Turn an extractor's (end, calls) / None (too short) / False (not a call) into a Step."""
    if found is None:
        return None
    return Calls(found[0], tuple(found[1])) if found else otherwise


def hold(final: bool, size: int = 1) -> Step:
    """Wait while more text may still decide; at the end, release the trigger as plain text."""
    return Text(size) if final else None


@dataclass(frozen=True)
class ToolParser:
    name: str
    recognisers: tuple[Recogniser, ...]

    def parse(self, text: str) -> ParseResult:
        stream = self.stream()
        return collect(stream.feed(text) + stream.finish())

    def stream(self) -> "ToolCallStream":
        return ToolCallStream(self)

    def scan(self, buf: str, line_start: bool, final: bool) -> Step:
        start = len(buf)
        for rec in self.recognisers:
            start = rec.first_trigger(buf, line_start, start)
        if start > 0:
            return Text(start)
        for rec in self.recognisers:
            if not rec.fires_at_start(buf, line_start):
                continue
            if any(m.startswith(buf) and m != buf for m in rec.markers):
                return hold(final, len(buf))  # only part of a marker so far
            return rec.candidate(buf, final)
        raise AssertionError("a trigger at 0 that no recogniser claims")


class ToolCallStream:
    """feed() text deltas, then finish(); holds back whatever may still turn out to be markup."""

    def __init__(self, parser: ToolParser):
        self._parser = parser
        self._buf = ""
        self._line_start = True
        self._index = 0
        self._space = Whitespace()

    def feed(self, delta: str) -> list[Event]:
        self._buf += delta
        return self._drain(final=False)

    def finish(self) -> list[Event]:
        return self._drain(final=True) + self._space.finish()

    def _drain(self, *, final: bool) -> list[Event]:
        events: list[Event] = []
        while self._buf:
            step = self._parser.scan(self._buf, self._line_start, final)
            if step is None and final:
                step = Text(1)  # a candidate failed to decide at the end: never lose text
            if step is None:
                break
            piece, self._buf = self._buf[: step.size], self._buf[step.size :]
            if isinstance(step, Text):
                events += self._space.text(piece)
                self._line_start = _ends_at_line_start(piece, self._line_start)
            else:
                self._space.markup()
                self._line_start = True  # a call ends a line: the next may start right after
                events += self._call_events(step.calls)
        return events

    def _call_events(self, calls: Iterable[ToolCall]) -> list[Event]:
        events: list[Event] = []
        for call in calls:
            i, self._index = self._index, self._index + 1
            events += [ToolCallStart(i, call.name), ToolCallArgs(i, call.arguments), ToolCallEnd(i)]
        return events


def _ends_at_line_start(piece: str, was: bool) -> bool:
    newline = piece.rfind("\n")
    return (newline != -1 or was) and not piece[newline + 1 :].strip(" \t")
