"""`pythonic` (Llama 3.2/4 small-model style): a line that opens with [f(a=1, b="x"), g()]."""

from .pycalls import pythonic_call_at
from .scanning import Recogniser, Text, ToolParser, settle


def _candidate(buf: str, final: bool):
    return settle(pythonic_call_at(buf, final), Text(1))


PARSER = ToolParser("pythonic", (Recogniser(_candidate, line_chars="["),))
