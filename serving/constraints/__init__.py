"""Grammar-constrained decoding with llguidance: structured output and forced tool calls.

    builder = ConstraintBuilder(engine.tokenizer)        # once per model: ~0.3 s
    factory = builder.json_schema_constraint(schema)     # per request; ValueError if unsupported
    factory = builder.tool_call_constraint(tools, allow_parallel=True)
    GenerationRequest(..., logits_processor=factory)

A factory is a `LogitsProcessorFactory` (serving.engine.request): the engine calls it once
per sequence and appends the processor it returns to that sequence's processors. Output is
one line of JSON laid out as json.dumps does (see grammars.py); once it is complete only
end-of-sequence tokens are allowed, so the sequence ends by itself.

The module-level functions take a ConstraintBuilder or a tokenizer; a tokenizer costs a new
builder on every call, so keep a builder.
"""

from __future__ import annotations

from typing import Any

from .builder import Constraint, ConstraintBuilder
from .processor import ConstraintViolation, GrammarProcessor


def json_schema_constraint(schema: dict | None, tokenizer: Any, *, lenient: bool = False) -> Constraint:
    """Output is JSON valid against `schema`; None means any JSON object."""
    return _builder(tokenizer).json_schema_constraint(schema, lenient=lenient)


def tool_call_constraint(tools: list[dict], tokenizer: Any, *, allow_parallel: bool,
                         lenient: bool = False) -> Constraint:
    """Output is `{"name":...,"arguments":{...}}` for one of `tools` (or, with allow_parallel,
    that or a JSON list of such calls)."""
    return _builder(tokenizer).tool_call_constraint(tools, allow_parallel=allow_parallel, lenient=lenient)


def _builder(tokenizer: Any) -> ConstraintBuilder:
    return tokenizer if isinstance(tokenizer, ConstraintBuilder) else ConstraintBuilder(tokenizer)


__all__ = [
    "Constraint", "ConstraintBuilder", "ConstraintViolation", "GrammarProcessor",
    "json_schema_constraint", "tool_call_constraint",
]
