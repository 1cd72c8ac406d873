"""Formats that wrap each call in a start and an end marker (hermes, LFM)."""

from __future__ import annotations

from typing import Callable

from .events import ToolCall
from .scanning import Calls, Recogniser

BodyParser = Callable[[str], list[ToolCall] | None]


def tagged(start: str, end: str, body: BodyParser) -> Recogniser:
    def candidate(buf: str, final: bool):
        if buf.startswith(end):
            return Calls(len(end))  # a stray end marker is still markup, never text
        close = buf.find(end, len(start))
        if close == -1 and not final:
            return None
        # Unclosed at the very end: the model ran out of tokens or skipped the end marker.
        payload_end, size = (len(buf), len(buf)) if close == -1 else (close, close + len(end))
        calls = body(buf[len(start) : payload_end])
        # A payload that is not a call loses only its markers: its words stay as text.
        return Calls(size, tuple(calls)) if calls else Calls(len(start))

    return Recogniser(candidate, markers=(start, end))
