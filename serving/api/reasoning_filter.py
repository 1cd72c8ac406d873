"""Between the engine and the tool-call filter: split model text into reasoning and answer.

Reasoning comes out as ReasoningText events, which every encoder renders its own way
(chat `reasoning_content`, a Responses reasoning item, an Anthropic thinking block); the
answer stays StepOutput text, which the tool-call parser then reads. A step's token ids and
logprobs stay with a StepOutput even when its text is held back or is reasoning.

Reasoning tokens are counted for usage: a step's tokens count when the step began or ended
inside reasoning, so both tags are counted (Anthropic counts the delimiters too).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..engine.request import Finished, StepOutput
from ..parsers.reasoning import ContentDelta, ReasoningParser


@dataclass(frozen=True)
class ReasoningText:
    text: str


@dataclass(frozen=True)
class ReasoningSetup:
    """One request's reasoning: the server's parser, and whether the prompt already opened it."""

    parser: ReasoningParser
    inside: bool

    def filter(self) -> "ReasoningFilter":
        return ReasoningFilter(self.parser, inside=self.inside)


class ReasoningFilter:
    def __init__(self, parser: ReasoningParser, *, inside: bool) -> None:
        self._stream = parser.stream(inside=inside)
        self.reasoning_tokens = 0

    @staticmethod
    def _translate(events) -> list:
        return [StepOutput((), e.text) if isinstance(e, ContentDelta) else ReasoningText(e.text) for e in events]

    def feed(self, out: StepOutput) -> list:
        before = self._stream.inside
        events = self._translate(self._stream.feed(out.text)) if out.text else []
        if before or self._stream.inside:
            self.reasoning_tokens += len(out.token_ids)
        if len(events) == 1 and isinstance(events[0], StepOutput):  # plain answer text: keep the step whole
            return [StepOutput(out.token_ids, events[0].text, out.logprobs)]
        carried = [StepOutput(out.token_ids, "", out.logprobs)] if out.token_ids or out.logprobs else []
        return carried + events

    def finish(self, fin: Finished) -> tuple[list, Finished]:
        events = self._translate(self._stream.finish())
        return events, replace(fin, usage=replace(fin.usage, reasoning_tokens=self.reasoning_tokens))
