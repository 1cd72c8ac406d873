"""A per-request reasoning budget, and a grammar that waits for the answer.

The processor follows the sequence's text with the reasoning parser's own state machine, so it
agrees with what the client will be shown about where reasoning starts and ends. While inside
reasoning it leaves the logits alone, until the sequence has spent `budget` tokens there: then it
forces the tokens of the closing tag, one per step, and the answer follows. A constraint
(response_format, a forced tool call) applies to the answer only: its processor is made when
reasoning ends, with the tokens left as its budget, and its first call (which feeds it
nothing) comes the step after the closing tag, as a fresh grammar expects.

Called as mlx-lm's BatchGenerator calls every processor (see processor.py): the first call
sees the prompt's last token, each later one the token sampled the step before. Reading that
token costs a wait for the step, so the server adds this processor only to requests that
need it.
"""

from __future__ import annotations

from typing import Any, Callable

import mlx.core as mx


def force(logits: mx.array, token: int) -> mx.array:
    """Only `token` keeps its logit."""
    return mx.where(mx.arange(logits.shape[-1]) == token, logits, -float("inf"))


class BudgetProcessor:
    def __init__(self, tracker, piece: Callable[[int], str], *, budget: int | None, end_ids: list[int],
                 then: Callable[[int], Any] | None, max_tokens: int) -> None:
        self._tracker = tracker
        self._piece = piece
        self._budget = budget
        self._end_ids = list(end_ids)
        self._then = then
        self._max_tokens = max_tokens
        self._answer = None  # the constraint's processor, once reasoning is over
        self._forcing: list[int] = []
        self._started = False
        self.generated = 0
        self.spent = 0  # tokens generated inside reasoning

    @property
    def inside(self) -> bool:
        return self._tracker.inside

    def _consume(self, token: int) -> None:
        self.generated += 1
        if self._forcing:  # a mismatch (another processor won) starts the closing tag afresh
            self._forcing = self._forcing[1:] if self._forcing[0] == token else []
        if self._tracker.inside:
            self.spent += 1
        self._tracker.feed(self._piece(token))

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self._started:
            self._consume(int(tokens[-1].item()))
        self._started = True
        if self._forcing:
            return force(logits, self._forcing[0])
        if self._tracker.inside:
            if self._budget is not None and self.spent >= self._budget and self._end_ids:
                self._forcing = list(self._end_ids)
                return force(logits, self._forcing[0])
            return logits
        if self._then is None:
            return logits
        if self._answer is None:
            self._answer = self._then(max(1, self._max_tokens - self.generated))
        return self._answer(tokens, logits)


class ReasoningBudget:
    """The engine's LogitsProcessorFactory: a fresh BudgetProcessor per sequence.

    `parser` is a reasoning parser (serving.parsers.reasoning); `inside`: the prompt opened
    reasoning; `piece(token)`: a token's text; `end_ids`: the closing tag's token ids; `then`:
    the answer's constraint factory, or None.
    """

    def __init__(self, parser, piece: Callable[[int], str], *, budget: int | None, end_ids: list[int],
                 inside: bool, then: Callable[[int], Any] | None = None) -> None:
        self.parser = parser
        self.piece = piece
        self.budget = budget
        self.end_ids = list(end_ids)
        self.inside = inside
        self.then = then

    def __call__(self, max_tokens: int | None = None) -> BudgetProcessor:
        return BudgetProcessor(self.parser.stream(inside=self.inside), self.piece, budget=self.budget,
                               end_ids=self.end_ids, then=self.then,
                               max_tokens=max_tokens if max_tokens is not None else 1 << 30)
