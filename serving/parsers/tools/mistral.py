"""`mistral`: [TOOL_CALLS][{"name": ..., "arguments": {...}}], or the newer
[TOOL_CALLS]name[ARGS]{...} (one marker per call). A marker with no call after it is dropped."""

import json
import re

from .jsoncalls import balanced_end, call_from_object, json_call_at
from .scanning import Calls, Recogniser, ToolParser, settle

MARKER = "[TOOL_CALLS]"
ARGS = "[ARGS]"
_NAME = re.compile(r"[\w.-]+")


def _candidate(buf: str, final: bool):
    start = len(buf) - len(buf[len(MARKER) :].lstrip())
    if start == len(buf):
        return Calls(len(MARKER)) if final else None
    if buf[start] in "[{":
        found = json_call_at(buf, start, final)
    else:
        found = _name_args(buf, start, final)
    return settle(found, Calls(len(MARKER)))


def _name_args(buf: str, start: int, final: bool):
    """name[ARGS]{...} -> (end, [call]), None while it may still become one, False if not."""
    name = _NAME.match(buf, start)
    if not name:
        return False
    rest = buf[name.end() :]
    if not rest.startswith(ARGS):
        return None if ARGS.startswith(rest) and not final else False
    brace = name.end() + len(ARGS)
    if brace == len(buf):
        return False if final else None
    end = balanced_end(buf, brace, '"') if buf[brace] == "{" else -1
    if end is None:
        return False if final else None
    try:
        args = json.loads(buf[brace:end]) if end != -1 else None
    except (ValueError, RecursionError):  # deep nesting is not a call either
        return False
    call = call_from_object({"name": name.group(), "arguments": args})
    return (end, [call]) if call else False


def _stray_args(buf: str, final: bool):
    return Calls(len(ARGS))  # a special token outside a call: still markup, never text


PARSER = ToolParser(
    "mistral",
    (Recogniser(_candidate, markers=(MARKER,)), Recogniser(_stray_args, markers=(ARGS,))),
)
