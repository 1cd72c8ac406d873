"""Compiling grammars for one tokenizer, and the per-request factory the engine calls."""

from __future__ import annotations

import copy
from typing import Any

from llguidance import LLMatcher, LLTokenizer

from . import grammars
from .closing import Closers
from .processor import GrammarProcessor


def llg_tokenizer(tokenizer: Any) -> LLTokenizer:
    """llguidance's view of the engine's tokenizer (mlx-lm's TokenizerWrapper or a fast
    HF tokenizer). Every end-of-sequence token the engine stops on ends a grammar too;
    the tokenizer's own EOS comes first.

    Costs about 0.3 s for a 49k vocabulary (it reads every token's bytes); build it once.
    """
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"constrained decoding needs a fast (Rust) tokenizer, not {type(hf).__name__}")
    backend = copy.copy(backend)  # the same steps as llguidance.hf.from_tokenizer, minus its type check
    backend.no_padding()
    backend.no_truncation()
    first = getattr(tokenizer, "eos_token_id", None)
    if first is None:
        first = hf.eos_token_id
    others = getattr(tokenizer, "eos_token_ids", None) or ()
    eos = [first] + sorted(set(others) - {first}) if first is not None else sorted(others)
    if not eos:
        raise ValueError("constrained decoding needs an end-of-sequence token; the tokenizer has none")
    return LLTokenizer(backend.to_str(), eos_token=eos)




class Constraint:
    """A compiled grammar, and the engine's LogitsProcessorFactory: each call (once per
    sequence, on the engine thread) returns a fresh GrammarProcessor in the start state.

    `grammar` is llguidance's grammar text (for logs); `warnings` lists what lenient
    compilation ignored (empty when strict).
    """

    def __init__(self, matcher: LLMatcher, vocab_size: int, grammar: str, warnings: list[str],
                 closers: Closers | None = None) -> None:
        self._prototype = matcher
        self._vocab_size = vocab_size
        self._closers = closers
        self.grammar = grammar
        self.warnings = warnings

    def __call__(self, max_tokens: int | None = None) -> GrammarProcessor:
        """A processor in the start state; given the sequence's max_tokens, it closes the
        output before the budget runs out (see processor.py)."""
        return GrammarProcessor(self._prototype.deep_copy(), self._vocab_size, budget=max_tokens,
                                closers=self._closers)


class ConstraintBuilder:
    """Compiles grammars for one tokenizer; its llguidance tokenizer is built once, here.

    Safe to share between threads: compiling happens on the calling thread (llguidance
    releases the GIL meanwhile), and each Constraint hands every sequence its own matcher.
    Schema errors raise ValueError with llguidance's reason on one line.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = llg_tokenizer(tokenizer)
        self.closers = Closers.for_tokenizer(self.tokenizer)

    def json_schema_constraint(self, schema: dict | None, *, lenient: bool = False) -> Constraint:
        """JSON valid against `schema` (None: any JSON object, for json_object mode).

        Strict by default: a keyword or format llguidance cannot enforce is a ValueError
        rather than silently unenforced; lenient=True ignores those (listed in `warnings`).
        """
        return self._compile(grammars.json_schema_grammar(schema, lenient=lenient), "schema")

    def tool_call_constraint(self, tools: list[dict], *, allow_parallel: bool,
                             lenient: bool = False) -> Constraint:
        """Exactly `{"name": "<one of the tools>", "arguments": {...valid for that tool...}}`;
        with allow_parallel, that or a JSON list of one or more. Each tool is
        `{"name": str, "parameters": JSON schema or None (no parameters: `{}`)}`; a forced
        named function is this with that one tool.
        """
        return self._compile(grammars.tool_call_grammar(tools, allow_parallel=allow_parallel,
                                                        lenient=lenient), "tools")

    def _compile(self, grammar: str, what: str) -> Constraint:
        matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"{what}: {grammars.reason(matcher.get_error())}")
        return Constraint(matcher, self.tokenizer.vocab_size, grammar, matcher.get_grammar_warnings(),
                          self.closers)
