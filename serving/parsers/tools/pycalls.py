"""The pythonic-call parser shared by the pythonic and LFM formats: [f(a=1), g()]."""

from __future__ import annotations

import ast
import re

from .events import ToolCall
from .jsoncalls import balanced_end, dump_arguments

_HEAD = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_HEAD_SO_FAR = re.compile(r"\[\s*([A-Za-z_][\w.]*\s*)?")
# Templates render nested values as JSON, so models echo true/false/null inside Python calls.
_JSON_NAMES = {"true": True, "false": False, "null": None}


def pythonic_head(text: str) -> bool | None:
    """Can text open a call list? None: too short to tell."""
    if _HEAD.match(text):
        return True
    return None if _HEAD_SO_FAR.fullmatch(text) else False


def parse_pythonic(text: str) -> list[ToolCall] | None:
    """A Python list of calls with keyword literal arguments, or None if text is anything else."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):  # ValueError: NUL bytes
        return None
    if not isinstance(tree, ast.List) or not tree.elts:
        return None
    calls = [_call(node) for node in tree.elts]
    return calls if None not in calls else None


def _call(node: ast.expr) -> ToolCall | None:
    name = _dotted(node.func) if isinstance(node, ast.Call) else None
    if name is None or node.args:
        return None
    args = {}
    for kw in node.keywords:
        if kw.arg is None:  # **kwargs is not a literal
            return None
        try:
            args[kw.arg] = _literal(kw.value)
        except (ValueError, RecursionError):
            return None
    return ToolCall(name, dump_arguments(args))


def _literal(node: ast.expr):
    """Only what JSON can carry: literal_eval alone would also let sets, bytes and complex in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, type(None))):
        return node.value  # bool is an int
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        keys = [_literal(k) if k is not None else None for k in node.keys]
        if all(isinstance(k, str) for k in keys):
            return dict(zip(keys, (_literal(v) for v in node.values)))
    raise ValueError("not a JSON literal")


def _dotted(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        parent = _dotted(func.value)
        return f"{parent}.{func.attr}" if parent else None
    return None


def pythonic_call_at(buf: str, final: bool):
    """Decide on a call list at the start of buf: (end, calls), None (too short) or False."""
    head = pythonic_head(buf)
    if head is None:
        return False if final else None
    if not head:
        return False
    end = balanced_end(buf, 0, "'\"")
    if end is None:
        return False if final else None
    calls = parse_pythonic(buf[:end]) if end != -1 else None
    return (end, calls) if calls else False
