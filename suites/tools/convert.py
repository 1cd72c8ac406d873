"""BFCL function docs -> OpenAI function tools, and the tool names back to BFCL's.

BFCL writes parameters in a JSON-schema dialect with Python-ish types; OpenAI wants JSON Schema:
dict -> object, float -> number, tuple -> array, any -> no type (any JSON value). BFCL's own
`optional` key is not JSON Schema (whether a parameter may be left out is what `required` says),
so it is dropped. OpenAI names allow only [A-Za-z0-9_-]: BFCL replaces dots with underscores for
OpenAI-style models, and so do we; the model's answer is mapped back before checking.
"""

from __future__ import annotations

import copy
import re

TYPES = {"dict": "object", "object": "object", "float": "number", "number": "number", "integer": "integer",
         "string": "string", "boolean": "boolean", "array": "array", "tuple": "array", "list": "array",
         "bool": "boolean"}
UNTYPED = "any"
DROPPED_KEYS = frozenset({"optional"})


def schema(node: dict, *, where: str = "parameters") -> dict:
    """One BFCL schema node as JSON Schema (a new dict; the input is not changed)."""
    out = {}
    for key, value in node.items():
        if key == "type":
            if value == UNTYPED:
                continue
            if not isinstance(value, str) or value not in TYPES:
                raise ValueError(f"{where}: BFCL type {value!r} has no JSON Schema mapping; known: "
                                 f"{', '.join([*TYPES, UNTYPED])}")
            out["type"] = TYPES[value]
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: schema(sub, where=f"{where}.{name}") for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = schema(value, where=f"{where}[]")
        elif key in DROPPED_KEYS:
            continue
        else:
            out[key] = copy.deepcopy(value)
    return out


def openai_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def to_tools(functions: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """(OpenAI tools, {name as sent: BFCL name}) for one case's function docs."""
    tools, names = [], {}
    for doc in functions:
        sent = openai_name(doc["name"])
        if sent in names:
            raise ValueError(f"functions {names[sent]!r} and {doc['name']!r} both become {sent!r}")
        names[sent] = doc["name"]
        parameters = schema(doc.get("parameters") or {"type": "dict", "properties": {}}, where=doc["name"])
        parameters["type"] = "object"  # OpenAI requires an object at the top
        function = {"name": sent, "description": doc.get("description", ""), "parameters": parameters}
        tools.append({"type": "function", "function": function})
    return tools, names


def bfcl_name(returned: str, names: dict[str, str]) -> str:
    """The BFCL name of a returned call: mapped back when it is a name we sent, else as returned
    (a model may echo the dotted original; an unknown name stays unknown and fails the check)."""
    return names.get(returned, returned)
