"""Steering a constrained JSON output towards its end as the token budget runs out.

A greedy small model can loop inside a string or a number (`"cumin paste paste powder…"`)
until max_tokens cuts its JSON mid-value. In the budget's last `closing_reserve` tokens the
processor narrows the grammar's mask to tokens that close what is open, where it allows any:
- inside a string: tokens that start by ending it (`"`, `"}`, `"]}`…). A bare `}` or `]` is
  only more string content there, and would let the loop go on;
- outside a string: tokens made only of `}` and `]`, and end of sequence;
- at a value the grammar still wants (a required key's, an array item): a token that opens a
  string (`"`, or `""` whole); the next step closes it.
Everything the grammar allows stays allowed where none of these is (a required key's name,
a number's next digit), so the output stays valid JSON for its schema, only shorter than the
model wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BRACKETS = frozenset(b"]}")
QUOTE = ord('"')


def closing_reserve(budget: int) -> int:
    """Tokens at the end of a budget in which a grammar steers towards closing: enough for
    a few closing brackets and a missing required key or two, and never most of a small budget."""
    return max(1, min(32, budget // 4))


@dataclass(frozen=True)
class Closers:
    """Per-token masks over a vocabulary, and each token's bytes (for the lexical state)."""

    brackets: np.ndarray   # only `]` and `}`, or end of sequence
    quoted: np.ndarray     # a `"` first, then only `"`, `]`, `}`; or end of sequence
    pieces: tuple[bytes, ...]

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "Closers":
        """From an llguidance LLTokenizer (special tokens have no bytes here)."""
        n = tokenizer.vocab_size
        pieces = tuple(b"" if tokenizer.is_special_token(i) else tokenizer.decode_bytes([i]) for i in range(n))
        brackets = np.array([bool(p) and BRACKETS.issuperset(p) for p in pieces], dtype=np.bool_)
        quoted = np.array([bool(p) and p[0] == QUOTE and BRACKETS.union(b'"').issuperset(p) for p in pieces],
                          dtype=np.bool_)
        eos = list(tokenizer.eos_tokens)
        brackets[eos] = quoted[eos] = True
        return cls(brackets, quoted, pieces)


class JsonLexer:
    """Whether the JSON text fed so far ends inside a string (escapes followed)."""

    def __init__(self) -> None:
        self.in_string = False
        self._escape = False

    def feed(self, piece: bytes) -> None:
        for byte in piece:
            if self._escape:
                self._escape = False
            elif self.in_string and byte == 0x5C:  # backslash
                self._escape = True
            elif byte == QUOTE:
                self.in_string = not self.in_string


def towards_close(allowed: np.ndarray, closers: Closers, lexer: JsonLexer) -> np.ndarray:
    """The mask narrowed to closing tokens where the grammar allows any; otherwise unchanged."""
    order = (closers.quoted,) if lexer.in_string else (closers.brackets, closers.quoted)
    n = min(len(allowed), len(closers.brackets))
    for mask in order:
        narrowed = np.zeros_like(allowed)
        narrowed[:n] = allowed[:n] & mask[:n]
        if narrowed.any():
            return narrowed
    return allowed
