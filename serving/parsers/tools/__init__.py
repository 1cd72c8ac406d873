"""Tool-call parsers, one module per output format, chosen by name.

Contract (see scanning.ToolParser):
  parser.parse(text) -> ParseResult(content, calls)        the finished text, all at once
  s = parser.stream(); s.feed(delta) -> [Event]; s.finish() -> [Event]
      Events: TextDelta(text), ToolCallStart(index, name), ToolCallArgs(index, fragment),
      ToolCallEnd(index). For any chunking, the text deltas join to parse(text).content and the
      calls (name + joined fragments) equal parse(text).calls. Markup is never sent as text.
  ToolCall.arguments is always json.dumps(<object>, ensure_ascii=False).
"""

from __future__ import annotations

from . import bare_json, hermes, lfm, llama3, mistral, pythonic
from .events import Event, ParseResult, TextDelta, ToolCall, ToolCallArgs, ToolCallEnd
from .events import ToolCallStart, collect
from .scanning import ToolCallStream, ToolParser

PARSERS: dict[str, ToolParser] = {
    m.PARSER.name: m.PARSER for m in (hermes, bare_json, llama3, mistral, pythonic, lfm)
}

# Checked in order against the tokenizer's tool_call_start, then its chat template.
AUTO_MARKERS = (
    ("<|tool_call_start|>", "lfm"),
    ("<|python_tag|>", "llama3"),
    ("[TOOL_CALLS]", "mistral"),
    ("<tool_call>", "hermes"),
)
FALLBACK = "json"  # bare JSON: what models do when their template has no tool syntax


class UnknownParserError(ValueError):
    pass


def get_parser(name: str) -> ToolParser:
    try:
        return PARSERS[name]
    except KeyError:
        known = ", ".join(sorted(PARSERS) + ["auto"])
        raise UnknownParserError(f"unknown tool parser {name!r} (known: {known})") from None


def choose_parser(
    name: str = "auto", *, chat_template: str | None = None, tool_call_start: str | None = None
) -> ToolParser:
    """An explicit name wins; `auto` reads the markers the tokenizer or its template uses."""
    if name != "auto":
        return get_parser(name)
    for source in (tool_call_start, chat_template):
        for marker, parser in AUTO_MARKERS:
            if source and marker in source:
                return PARSERS[parser]
    return PARSERS[FALLBACK]


__all__ = [
    "AUTO_MARKERS", "Event", "PARSERS", "ParseResult", "TextDelta", "ToolCall", "ToolCallArgs",
    "ToolCallEnd", "ToolCallStart", "ToolCallStream", "ToolParser", "UnknownParserError",
    "choose_parser", "collect", "get_parser",
]
