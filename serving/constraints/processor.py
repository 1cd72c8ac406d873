"""The per-sequence logits processor that walks an llguidance matcher.

mlx-lm's BatchGenerator calls a sequence's processors once per decode step as
`processor(context, logits)`, where `context` is every token of the sequence so far
(prompt included) ending with the token being fed to the model this step. On the first
call that last token is the prompt's last one; on every later call it is the token sampled
the step before. So the first call feeds the grammar nothing and each later call feeds it
exactly `context[-1]`. The step after the final token (an end-of-sequence token, or the one
that reached max_tokens) still runs the processor once, with that token; the grammar
accepts an end-of-sequence token once it is complete, and its mask is then thrown away.

Near the end of its token budget a processor steers towards closing the JSON (closing.py):
a forced call or a json_schema response is then shorter than the model wanted, never invalid.

Disallowed tokens get -inf. Logits wider than the tokenizer's vocabulary (models pad their
embedding) have the padding disallowed. A token the grammar rejects cannot be sampled
through the mask, so a rejection means something upstream is broken: it raises
ConstraintViolation, which fails the engine step.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from llguidance import LLMatcher
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from .closing import Closers, JsonLexer, closing_reserve, towards_close
from .grammars import reason


class ConstraintViolation(RuntimeError):
    """The grammar matcher rejected a token or failed while computing a mask."""


class GrammarProcessor:
    """One sequence's processor: `(tokens, logits) -> logits` with forbidden tokens at -inf.

    Not thread-safe; the engine calls it from its own thread only.
    """

    def __init__(self, matcher: LLMatcher, vocab_size: int, *, budget: int | None = None,
                 closers: Closers | None = None) -> None:
        self._matcher = matcher
        self._bitmask = allocate_token_bitmask(1, vocab_size)
        self._started = False
        self._closers = closers
        self._lexer = JsonLexer()
        # Token number (1-based) from which closing applies; None: never.
        self._close_from = None if budget is None or closers is None else budget - closing_reserve(budget) + 1
        self._step = 0

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self._started:
            # Reading the token waits for the previous step: the pipeline bubble a grammar
            # costs. Queuing this step's forward pass first (mx.async_eval(logits)) showed no
            # gain on CPU, and would queue a second constrained sequence's read behind it.
            self._consume(int(tokens[-1].item()))
        self._started = True
        fill_next_token_bitmask(self._matcher, self._bitmask)
        if self._matcher.is_error():
            raise ConstraintViolation(f"grammar matcher failed: {self._error()}")
        self._step += 1
        width = logits.shape[-1]
        allowed = np.unpackbits(self._bitmask.view(np.uint8), count=width, bitorder="little").view(np.bool_)
        if self._close_from is not None and self._step >= self._close_from:
            allowed = towards_close(allowed, self._closers, self._lexer)
        return mx.where(mx.array(allowed), logits, -float("inf"))


    def _consume(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise ConstraintViolation(f"grammar rejected token {token}: {self._error()}")
        if self._closers is not None and token < len(self._closers.pieces):
            self._lexer.feed(self._closers.pieces[token])

    def _error(self) -> str:
        return reason(self._matcher.get_error())
