"""Reasoning parsers: split a model's text into its reasoning and its answer, chosen by name.

Contract (see think.py):
  parser.parse(text, inside=False) -> ReasoningResult(reasoning | None, content)
  s = parser.stream(inside=False); s.feed(delta) -> [ReasoningDelta | ContentDelta]; s.finish()
      For any chunking, the deltas join to parse(text); s.inside says where the stream is now.
  parser.opens_reasoning(prompt_tail): the prompt's generation prompt already opened reasoning.

`none` is no parser: the model's text is all answer. `auto` picks `think` when the chat
template mentions <think>, else none.
"""

from __future__ import annotations

from . import think
from .think import ContentDelta, ReasoningDelta, ReasoningParser, ReasoningResult, ThinkStream, collect

PARSERS: dict[str, ReasoningParser] = {think.PARSER.name: think.PARSER}
CHOICES = ("auto", "none", *PARSERS)


class UnknownReasoningParserError(ValueError):
    pass


def choose_reasoning_parser(name: str = "auto", *, chat_template: str | None = None) -> ReasoningParser | None:
    if name == "none":
        return None
    if name == "auto":
        return next((p for p in PARSERS.values() if chat_template and p.start in chat_template), None)
    try:
        return PARSERS[name]
    except KeyError:
        raise UnknownReasoningParserError(
            f"unknown reasoning parser {name!r} (known: {', '.join(CHOICES)})") from None


__all__ = [
    "CHOICES", "ContentDelta", "PARSERS", "ReasoningDelta", "ReasoningParser", "ReasoningResult",
    "ThinkStream", "UnknownReasoningParserError", "choose_reasoning_parser", "collect",
]
