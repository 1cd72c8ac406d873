"""What a tool-call parser returns: a whole result, or a stream of events that adds up to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class ToolCall:
    name: str
    # JSON text, always json.dumps of the parsed object, so streamed and whole results compare equal.
    arguments: str


@dataclass(frozen=True)
class ParseResult:
    content: str
    calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    index: int
    name: str


@dataclass(frozen=True)
class ToolCallArgs:
    index: int
    fragment: str


@dataclass(frozen=True)
class ToolCallEnd:
    index: int


Event = Union[TextDelta, ToolCallStart, ToolCallArgs, ToolCallEnd]


def collect(events: list[Event]) -> ParseResult:
    """Fold a stream's events into the result a whole-text parse gives."""
    text: list[str] = []
    names: dict[int, str] = {}
    args: dict[int, list[str]] = {}
    for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ToolCallStart):
            names[event.index] = event.name
            args[event.index] = []
        elif isinstance(event, ToolCallArgs):
            args[event.index].append(event.fragment)
    calls = [ToolCall(names[i], "".join(args[i])) for i in sorted(names)]
    return ParseResult("".join(text), calls)
