"""Between the engine and a dialect's encoder: turn model text into text plus structured calls.

The parser (chosen once per server from the model's template) holds back
anything that may be call markup, so no markup ever reaches a client as text,
streamed or whole. Each finished call gets an id, and its arguments are
checked against the tool's declared schema, with only unambiguous coercions
("3" -> 3 for an integer parameter).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from jsonschema.validators import validator_for

from ..engine.request import Finished, StepOutput
from ..parsers.tools import TextDelta, ToolCallArgs, ToolCallEnd, ToolCallStart
from .tools import ToolRequest


@dataclass(frozen=True)
class ToolCallOut:
    index: int
    id: str
    name: str
    arguments: str  # JSON text of an object
    valid: bool  # whether the arguments validate against the tool's schema (unknown tools: False)


def _coerce_scalar(value, kind: str):
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if kind == "integer" and text.lstrip("-").isdigit():
            return int(text)
        if kind == "number":
            number = float(text)
            return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    except ValueError:
        return value
    if kind == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return value


def coerce(value, schema: dict):
    """Unambiguous coercions only: a string that spells exactly the declared scalar type."""
    if not isinstance(schema, dict):
        return value
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: coerce(v, props.get(k, {})) for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [coerce(v, schema.get("items") or {}) for v in value]
    if kind in ("integer", "number", "boolean"):
        return _coerce_scalar(value, kind)
    return value


def checked_arguments(arguments: str, schema: dict | None) -> tuple[str, bool]:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments, False
    if schema is None:
        return json.dumps(value, ensure_ascii=False), False
    value = coerce(value, schema)
    valid = isinstance(value, dict) and validator_for(schema)(schema).is_valid(value)
    return json.dumps(value, ensure_ascii=False), valid


class ToolCallFilter:
    def __init__(self, parser, request: ToolRequest) -> None:
        self._stream = parser.stream()
        self._schemas = {t.name: t.parameters for t in request.tools}
        self._open: dict[int, tuple[str, list[str]]] = {}
        self.calls: list[ToolCallOut] = []

    def _translate(self, events) -> list:
        out = []
        for e in events:
            if isinstance(e, TextDelta):
                out.append(StepOutput((), e.text))
            elif isinstance(e, ToolCallStart):
                self._open[e.index] = (e.name, [])
            elif isinstance(e, ToolCallArgs):
                self._open[e.index][1].append(e.fragment)
            elif isinstance(e, ToolCallEnd):
                name, parts = self._open.pop(e.index)
                arguments, valid = checked_arguments("".join(parts), self._schemas.get(name))
                call = ToolCallOut(len(self.calls), f"call_{uuid.uuid4().hex[:24]}", name, arguments, valid)
                self.calls.append(call)
                out.append(call)
        return out

    def feed(self, out: StepOutput) -> list:
        # The step's token ids and logprobs stay with the step even when its text is held back.
        carried = [StepOutput(out.token_ids, "", out.logprobs)] if out.token_ids or out.logprobs else []
        return carried + (self._translate(self._stream.feed(out.text)) if out.text else [])

    def finish(self, fin: Finished) -> tuple[list, Finished]:
        """The last held-back text and calls, and the Finished event a client should see."""
        events = self._translate(self._stream.finish())
        # A cut by max_tokens stays "length" even after complete calls: what follows them was cut
        # off (often the opening of one more call), and the client must be told its answer is partial.
        if self.calls and fin.reason in ("eos", "stop"):
            fin = Finished("tool_calls", fin.usage)
        return events, fin
