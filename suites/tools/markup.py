"""Does response text still look like a tool call? A black-box detector (no server code).

Known markups: Hermes/Qwen `<tool_call>`, Mistral `[TOOL_CALLS]`, Llama 3 `<|python_tag|>`,
Liquid `<|tool_call_start|>`, `<function=...>`, a JSON object with "name" and "arguments" or
"parameters" (bare, fenced or inside a list; `json_partial`: only the opening of one, as a call cut
off by max_tokens leaves it), and a pythonic call list `[f(x=1), g()]`.
Used for parse fidelity: call markup left in `content` is a call the server did not return as
a structured tool call.
"""

from __future__ import annotations

import ast
import json
import re

TAGS = (("<tool_call>", "hermes"), ("</tool_call>", "hermes"), ("[TOOL_CALLS]", "mistral"),
        ("<|python_tag|>", "llama3"), ("<|tool_call_start|>", "lfm"), ("<function=", "function_tag"))
_JSON_OPENING = re.compile(r'\{\s*"name"\s*:\s*"[^"\n]*"\s*,\s*"(?:arguments|parameters)"\s*:')
_PYTHONIC_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_DECODER = json.JSONDecoder()
_MAX_SCAN = 64  # closing brackets tried per pythonic candidate


def _json_call(obj) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("name"), str)
            and ("arguments" in obj or "parameters" in obj))


def has_json_call(text: str) -> bool:
    """A JSON object anywhere in text (at any depth) with "name" and "arguments"/"parameters"."""
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = _DECODER.raw_decode(text, match.start())
        except ValueError:
            continue
        if _json_call(obj):
            return True
    return False


def _is_call_list(node) -> bool:
    if not isinstance(node, ast.List) or not node.elts:
        return False
    for call in node.elts:
        if not isinstance(call, ast.Call) or call.args or not isinstance(call.func, (ast.Name, ast.Attribute)):
            return False
        if any(kw.arg is None for kw in call.keywords):  # **kwargs is code, not a call to a tool
            return False
    return True


def has_pythonic_call(text: str) -> bool:
    """`[name(k=v, ...), ...]`: a Python list of calls with keyword arguments only."""
    for match in _PYTHONIC_START.finditer(text):
        closes = [m.start() for m in re.finditer(r"\]", text[match.start():])][:_MAX_SCAN]
        for end in closes:
            try:
                tree = ast.parse(text[match.start(): match.start() + end + 1], mode="eval")
            except (SyntaxError, ValueError):
                continue
            if _is_call_list(tree.body):
                return True
            break  # the first closing bracket that parses ends the list
    return False


def call_markup(text: str | None) -> list[str]:
    """Names of the call markups found in text, sorted; [] for none (or no text)."""
    if not text:
        return []
    found = {name for tag, name in TAGS if tag in text}
    if has_json_call(text):
        found.add("json")
    elif _JSON_OPENING.search(text):
        found.add("json_partial")
    if has_pythonic_call(text):
        found.add("pythonic")
    return sorted(found)
