"""`lfm` (Liquid LFM2): <|tool_call_start|>[f(k='v')]<|tool_call_end|>.

The payload is pythonic; LFM2 can also be told to emit JSON there, so that is read too.
"""

from .jsoncalls import parse_json_calls
from .pycalls import parse_pythonic
from .scanning import ToolParser
from .tagged import tagged


def _body(text: str):
    return parse_pythonic(text) or parse_json_calls(text)


PARSER = ToolParser("lfm", (tagged("<|tool_call_start|>", "<|tool_call_end|>", _body),))
