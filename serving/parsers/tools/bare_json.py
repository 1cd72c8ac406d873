"""`json`: calls as bare JSON or in a ```json fence, at the start of a line.

The universal fallback: small models (Qwen2.5-Coder-0.5B among them) answer a tool prompt with
{"name": ..., "arguments": ...}, a list of those, or the same inside a fence, with no markers.
Only a line that opens with `{`, `[` or a fence is held back, and only until its first key
shows whether it can be a call, so ordinary braces and brackets in prose stream through.
"""

from __future__ import annotations

import re

from .jsoncalls import json_call_at, json_head, parse_json_calls
from .scanning import Calls, Recogniser, Text, ToolParser, hold, settle

FENCE = "```"
_OPEN = re.compile(r"```[ \t]*(\w*)[ \t]*\n")
_OPEN_SO_FAR = re.compile(r"`{0,3}|```[ \t]*\w*[ \t]*")
_FENCE_LANGS = ("", "json")


def json_candidate(buf: str, final: bool):
    if buf.startswith("`"):
        return _fence(buf, final)
    # llama3 chains calls with ';', which arrives as a line_char right after a call.
    start = len(buf) - len(buf.lstrip("; \t\n")) if buf[0] == ";" else 0
    return settle(json_call_at(buf, start, final), Text(1))


def _fence(buf: str, final: bool):
    m = _OPEN.match(buf)
    if not m:
        return hold(final) if _OPEN_SO_FAR.fullmatch(buf) else Text(1)
    if m.group(1).lower() not in _FENCE_LANGS:
        return Text(1)  # a code block in another language: prose, let it stream
    body = m.end() + len(buf[m.end() :]) - len(buf[m.end() :].lstrip())
    head = json_head(buf[body:])
    if not head:
        return hold(final) if head is None else Text(1)
    close = buf.find(FENCE, body)
    if close == -1 and not final:
        return None
    size = len(buf) if close == -1 else close + len(FENCE)  # unclosed: the answer was cut off
    calls = parse_json_calls(buf[m.end() : close if close != -1 else len(buf)])
    return Calls(size, tuple(calls)) if calls else Text(1)


BARE_JSON = Recogniser(json_candidate, line_chars="{[`")

PARSER = ToolParser("json", (BARE_JSON,))
