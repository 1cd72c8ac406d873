"""`llama3`: <|python_tag|>{"name": ..., "parameters": {...}}; {...}, or the same JSON bare.

Llama 3.1+ chains several calls with ';'. A python_tag followed by something other than a JSON
call (the built-in code interpreter) loses the tag and keeps the rest as text.
"""

from .bare_json import json_candidate
from .jsoncalls import json_call_at
from .scanning import Calls, Recogniser, ToolParser, settle

TAG = "<|python_tag|>"


def _after_tag(buf: str, final: bool):
    start = len(buf) - len(buf[len(TAG) :].lstrip())
    return settle(json_call_at(buf, start, final), Calls(len(TAG)))


PARSER = ToolParser(
    "llama3",
    (Recogniser(_after_tag, markers=(TAG,)), Recogniser(json_candidate, line_chars="{[`;")),
)
