"""`hermes` (Qwen, Hermes, many others): <tool_call>{"name": ..., "arguments": {...}}</tool_call>.

Also reads bare JSON calls: Qwen2.5's template asks for the tags, yet its small models often
answer with the bare object, and `auto` picks this parser from that template.
"""

from .bare_json import BARE_JSON
from .jsoncalls import parse_json_calls
from .scanning import ToolParser
from .tagged import tagged

PARSER = ToolParser("hermes", (tagged("<tool_call>", "</tool_call>", parse_json_calls), BARE_JSON))
