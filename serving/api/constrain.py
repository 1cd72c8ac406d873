"""The constraint slot, filled: grammars for forced tool calls and structured output.

The grammar builder (llguidance, serving/constraints) is made once per server
for the model's tokenizer; a schema it cannot compile is the client's 400,
naming the field that carried it.
"""

from __future__ import annotations

from ..engine.request import LogitsProcessorFactory
from .errors import InvalidRequest, UnsupportedField
from .tools import ToolRequest


class LazyBuilder:
    """Builds the grammar compiler for the tokenizer on first use (it tokenises the
    whole vocabulary once), on whichever thread first needs it."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._built = None

    def _get(self):
        if self._built is None:
            from ..constraints import ConstraintBuilder  # llguidance: imported only when a request needs it
            self._built = ConstraintBuilder(self._tokenizer)
        return self._built

    def tool_call_constraint(self, tools, *, allow_parallel: bool):
        # Client tools often carry schema keywords a grammar cannot enforce (uniqueItems,
        # propertyNames...): those are skipped rather than refusing the whole tool list.
        return self._get().tool_call_constraint(tools, allow_parallel=allow_parallel, lenient=True)

    def json_schema_constraint(self, schema):
        return self._get().json_schema_constraint(schema)


def _builder(ctx, param: str):
    if ctx.constraints is None:
        raise UnsupportedField("constrained decoding is not available on this server (llguidance is missing)",
                               param=param)
    return ctx.constraints


def tool_constraint(request: ToolRequest, ctx, *, param: str = "tool_choice") -> LogitsProcessorFactory | None:
    """A grammar that admits only calls of the allowed tools with valid arguments, when a call is forced."""
    if not request.forced:
        return None
    tools = [{"name": t.name, "parameters": t.parameters} for t in request.callable_tools()]
    try:
        return _builder(ctx, param).tool_call_constraint(tools, allow_parallel=request.parallel)
    except ValueError as exc:
        raise InvalidRequest(f"cannot constrain decoding to these tools: {exc}", param="tools") from None


def json_constraint(schema: dict | None, ctx, *, param: str) -> LogitsProcessorFactory:
    """Output that is a JSON object (schema None) or validates against `schema`."""
    try:
        return _builder(ctx, param).json_schema_constraint(schema)
    except ValueError as exc:
        raise InvalidRequest(f"cannot constrain decoding to this schema: {exc}", param=param) from None


def one_constraint(*factories: LogitsProcessorFactory | None, param: str) -> LogitsProcessorFactory | None:
    chosen = [f for f in factories if f is not None]
    if len(chosen) > 1:
        raise InvalidRequest("a forced tool call and a structured output format cannot be combined", param=param)
    return chosen[0] if chosen else None
