"""The JSON-call extractor every JSON-speaking format shares."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from .events import ToolCall

_CLOSE = {"(": ")", "[": "]", "{": "}"}
_KEYS = ("name", "arguments", "parameters")
_HEAD = re.compile(r'(\[\s*)?\{\s*"(\w*)(")?')
_HEAD_SO_FAR = re.compile(r"(\[\s*)?(\{\s*)?")


def balanced_end(buf: str, start: int, quotes: str) -> int | None:
    """Index just past the bracket closing buf[start]: None if not closed yet, -1 if mismatched.

    Called again on every feed while a call is held, so it jumps between quotes and brackets
    with C-level searches; a Python step per character made long calls quadratic-slow."""
    stack: list[str] = []
    structure = _structure(quotes)
    i = start
    while m := structure.search(buf, i):
        c, i = m.group(), m.end()
        if c in quotes:
            i = _string_end(buf, i, c)
            if i is None:
                return None
        elif c in _CLOSE:
            stack.append(_CLOSE[c])
        else:
            if not stack or stack.pop() != c:
                return -1
            if not stack:
                return i
    return None


def _string_end(buf: str, i: int, quote: str) -> int | None:
    while (j := buf.find(quote, i)) != -1:
        k = j
        while k > i and buf[k - 1] == "\\":
            k -= 1
        if (j - k) % 2 == 0:  # an even run of backslashes escapes only itself
            return j + 1
        i = j + 1
    return None


@functools.lru_cache(maxsize=None)
def _structure(quotes: str) -> re.Pattern:
    return re.compile("[" + re.escape(quotes + "()[]{}") + "]")


def json_head(text: str) -> bool | None:
    """Can text open a call? Checked on the first key, so ordinary JSON is let go early
    instead of being held back until its closing brace. None: too short to tell."""
    m = _HEAD.match(text)
    if not m:
        return None if _HEAD_SO_FAR.fullmatch(text) else False
    key = m.group(2)
    if m.group(3):
        return key in _KEYS
    if m.end() < len(text):  # the key goes on with a character no call key has
        return False
    return None if any(k.startswith(key) for k in _KEYS) else False


def call_from_object(obj: Any) -> ToolCall | None:
    """{"name": str, "arguments"|"parameters": object or JSON text of one} -> a call."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters"))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return None
    return ToolCall(obj["name"], dump_arguments(args)) if isinstance(args, dict) else None


def dump_arguments(args: dict) -> str:
    return json.dumps(args, ensure_ascii=False)


def calls_from_value(value: Any) -> list[ToolCall] | None:
    """A call object or a non-empty list of them; anything else is not a call."""
    items = value if isinstance(value, list) else [value]
    calls = [call_from_object(item) for item in items]
    return calls if calls and None not in calls else None


# A string, or a comment or trailing comma outside one. Small models annotate arguments the
# way code does (`"inductance": 50e-6, // in H`); dropping the comment changes no value.
_LAX = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/|,(?=\s*[}\]])', re.S)


def strip_lax(text: str) -> str:
    """text without JavaScript-style comments and trailing commas outside strings."""
    return _LAX.sub(lambda m: m.group(1) or "", text)


def parse_json_calls(text: str) -> list[ToolCall] | None:
    """One or more JSON call values (objects or lists), separated by whitespace or ';'.
    Strict JSON first; failing that, the same text without comments and trailing commas."""
    calls = _parse_strict(text)
    if calls is None and ("/" in text or "," in text):
        lax = strip_lax(text)
        if lax != text:
            calls = _parse_strict(lax)
    return calls


def _parse_strict(text: str) -> list[ToolCall] | None:
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    i = 0
    while True:
        while i < len(text) and (text[i].isspace() or text[i] == ";"):
            i += 1
        if i == len(text):
            return calls or None
        try:
            value, i = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            return None
        found = calls_from_value(value)
        if found is None:
            return None
        calls += found


def json_call_at(buf: str, start: int, final: bool):
    """Decide on a JSON value at buf[start]: (end, calls), None (too short to tell) or False."""
    head = json_head(buf[start:])
    if head is None:
        return False if final else None
    if not head:
        return False
    end = balanced_end(buf, start, '"')
    if end is None:
        return False if final else None
    calls = parse_json_calls(buf[start:end]) if end != -1 else None
    return (end, calls) if calls else False

