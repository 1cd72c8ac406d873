"""Grammar text for llguidance: a JSON schema, or the tool-call shape the `json` parser reads.

The JSON is one line with fixed separators, exactly as Python's `json.dumps` writes it:
`", "` between items, `": "` after keys, and no other whitespace (no newlines, no indent, none
before the first or after the last bracket). One fixed form leaves a small model no
whitespace to wander in. The single spaces were measured, not chosen for looks: SmolLM2-135M,
greedy, four json_object prompts, gave four short sensible objects with them (`{"answer":
"yes"}`), but in the fully compact form (`,` and `:`) two ran to max_tokens nesting
(`{"answer":{"yes":[1,2,3,...`), probably because its usual token after `":` is ` "`.

Nothing else is added to a schema: strings, numbers and arrays are as long as the schema
allows. `max_tokens` bounds a schema without limits: near the end of the budget the processor
steers towards closing the value in progress (processor.py), so the output ends shorter but valid. Object properties come in the order the schema
lists them (llguidance fixes that order), so a tool call's `name` always precedes its
`arguments`.
"""

from __future__ import annotations

import json
from typing import Any

from llguidance import LLMatcher

ITEM_SEPARATOR, KEY_SEPARATOR = ", ", ": "
# llguidance's JSON options (its "x-guidance"); `lenient` is set per call.
LAYOUT = {"whitespace_flexible": False, "item_separator": ITEM_SEPARATOR, "key_separator": KEY_SEPARATOR}

ANY_OBJECT: dict = {"type": "object"}
# A function declared without parameters takes none (OpenAI's reading): arguments are `{}`.
NO_PARAMETERS: dict = {"type": "object", "properties": {}, "additionalProperties": False}


def options(*, lenient: bool) -> dict:
    """llguidance's JSON options; lenient ignores keywords and formats it cannot enforce."""
    return {**LAYOUT, "lenient": lenient}


def json_schema_grammar(schema: dict | None, *, lenient: bool = False) -> str:
    """Output is JSON (the layout above) valid against `schema`; None is any JSON object."""
    if schema is None:
        schema = ANY_OBJECT
    if not isinstance(schema, dict):
        raise ValueError(f"a JSON schema must be an object, not {type(schema).__name__}")
    return LLMatcher.grammar_from_json_schema(schema, overrides=options(lenient=lenient))


def arguments_schema(name: str, parameters: Any) -> dict:
    """A tool's parameters as the schema of its `arguments` object.

    The call parsers take only an object as arguments, so a schema without a `type` is
    narrowed to objects; one whose type excludes objects is an error.
    """
    if parameters is None:
        return NO_PARAMETERS
    if not isinstance(parameters, dict):
        raise ValueError(f"tool {name!r}: parameters must be a JSON schema object")
    kind = parameters.get("type")
    if kind == "object":
        return parameters
    if kind is None or (isinstance(kind, list) and "object" in kind):
        return {**parameters, "type": "object"}
    raise ValueError(f"tool {name!r}: parameters must describe a JSON object, not type {kind!r}")


def tool_call_grammar(tools: list[dict], *, allow_parallel: bool, lenient: bool = False) -> str:
    """`{"name": "<tool>", "arguments": <object valid for that tool>}`; with allow_parallel,
    that or a JSON list of one or more of them.

    Each tool's arguments are their own `%json` sub-grammar, so `$ref`s inside a tool's
    parameters resolve against that tool's schema, as the client wrote them.
    """
    if not tools:
        raise ValueError("at least one tool is needed to constrain a tool call")
    rules, names = [], set()
    for i, tool in enumerate(tools):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool {i}: name must be a non-empty string")
        if name in names:
            raise ValueError(f"tool names must be unique ({name!r} repeats)")
        names.add(name)
        args = arguments_schema(name, tool.get("parameters"))
        check_schema(args, lenient=lenient, what=f"tool {name!r} parameters")
        head = json.dumps({"name": name}, ensure_ascii=False)[:-1] + f'{ITEM_SEPARATOR}"arguments"{KEY_SEPARATOR}'
        rules.append(f"call_{i}: {_literal(head)} args_{i} \"}}\"")
        rules.append(f"args_{i}: %json {json.dumps({**args, 'x-guidance': options(lenient=lenient)})}")
    call = "call: " + " | ".join(f"call_{i}" for i in range(len(tools)))
    more = f"({_literal(ITEM_SEPARATOR)} call)*"
    start = f'start: call | "[" call {more} "]"' if allow_parallel else "start: call"
    return LLMatcher.grammar_from_lark("\n".join([start, call, *rules]))


def check_schema(schema: dict, *, lenient: bool, what: str) -> list[str]:
    """Compile one schema alone, so an error names the schema it comes from. Returns warnings."""
    grammar = LLMatcher.grammar_from_json_schema(schema, overrides=options(lenient=lenient))
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise ValueError(f"{what}: {reason(messages[0] if messages else '')}")
    return messages


def _literal(text: str) -> str:
    """A Lark string literal matching exactly `text` (llguidance reads JSON-style escapes)."""
    return json.dumps(text)


def reason(message: str, *, limit: int = 500) -> str:
    """llguidance's error as one line: a regex error spans lines, and a matcher's runtime
    error appends a dump of its state, which is cut off."""
    text = " ".join(message.split("<state>", 1)[0].split())
    return (text[:limit] + "...") if len(text) > limit else (text or "invalid grammar")
