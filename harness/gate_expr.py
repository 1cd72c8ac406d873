"""Gate expressions: `PATH OP VALUE`, parsed by a small scanner (never eval).

    gate   := path op value
    path   := name ( "." name | "[" string "]" | "[" integer "]" )*
    name   := [A-Za-z_][A-Za-z0-9_-]*          (hyphens allowed: client ids such as claude-code)
    op     := ">=" | "<=" | ">" | "<" | "==" | "!=" | "in"
    value  := number | string | true | false | null | "[" value ("," value)* "]"

Examples: `divergence.exact_match.ci_low >= 0.9`, `contracts.claude-code.tools == "pass"`,
`throughput.ratio_vs["mlx-lm"].ci_low >= 0.95`, `contracts.codex.tools in ["pass", "conditional"]`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

OPS = (">=", "<=", "==", "!=", ">", "<", "in")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_WORDS = {"true": True, "false": False, "null": None}


class GateSyntaxError(ValueError):
    """A gate that does not parse; the message shows where."""


@dataclass(frozen=True)
class Gate:
    text: str
    path: tuple[str | int, ...]
    op: str
    value: Any

    @property
    def suite(self) -> str:
        return str(self.path[0])

    def holds(self, actual: Any) -> bool | None:
        """Whether `actual OP value`; None when the two cannot be compared (a string against a
        number, a null against a bound)."""
        if self.op == "in":
            return actual in self.value
        if self.op in ("==", "!="):
            # 1 == 1.0 (a count against a rate), but never True == 1 nor "1" == 1
            equal = actual == self.value and (type(actual) is type(self.value)
                                               or (_number(actual) and _number(self.value)))
            return equal if self.op == "==" else not equal
        if not (_number(actual) and _number(self.value)):
            return None
        return {">=": actual >= self.value, "<=": actual <= self.value,
                ">": actual > self.value, "<": actual < self.value}[self.op]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class _Scanner:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def fail(self, what: str) -> GateSyntaxError:
        return GateSyntaxError(f"gate {self.text!r}: {what} at column {self.pos + 1}: "
                               f"{self.text[:self.pos]}>>>{self.text[self.pos:]}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip()
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> None:
        if not self.peek(token):
            raise self.fail(f"expected {token!r}")
        self.pos += len(token)

    def match(self, pattern: re.Pattern) -> str | None:
        self.skip()
        m = pattern.match(self.text, self.pos)
        if not m:
            return None
        self.pos = m.end()
        return m.group(0)

    def string(self) -> str:
        """A JSON double-quoted string (with its escapes), or a single-quoted one without escapes."""
        self.skip()
        if self.text.startswith('"', self.pos):
            try:
                text, self.pos = json.JSONDecoder().raw_decode(self.text, self.pos)
            except ValueError as exc:
                raise self.fail(f"bad string ({exc.args[0]})") from None
            return text
        if self.text.startswith("'", self.pos):
            end = self.text.find("'", self.pos + 1)
            if end < 0:
                raise self.fail("unterminated string")
            text, self.pos = self.text[self.pos + 1:end], end + 1
            return text
        raise self.fail("expected a string")

    def value(self) -> Any:
        self.skip()
        if self.peek("["):
            self.take("[")
            items = [self.value()]
            while self.peek(","):
                self.take(",")
                items.append(self.value())
            self.take("]")
            return items
        if self.peek('"') or self.peek("'"):
            return self.string()
        if (number := self.match(_NUMBER)) is not None:
            return float(number) if any(c in number for c in ".eE") else int(number)
        if (word := self.match(_NAME)) is not None and word in _WORDS:
            return _WORDS[word]
        raise self.fail("expected a number, a string, true, false, null or a [list]")

    def path(self) -> tuple[str | int, ...]:
        first = self.match(_NAME)
        if first is None:
            raise self.fail("expected a suite name")
        parts: list[str | int] = [first]
        while True:
            if self.text.startswith(".", self.pos):
                self.pos += 1
                name = _NAME.match(self.text, self.pos)
                if not name:
                    raise self.fail("expected a name after '.'")
                parts.append(name.group(0))
                self.pos = name.end()
            elif self.text.startswith("[", self.pos):
                self.pos += 1
                self.skip()
                if self.peek('"') or self.peek("'"):
                    parts.append(self.string())
                elif (integer := self.match(_INTEGER)) is not None:
                    parts.append(int(integer))
                else:
                    raise self.fail("expected a quoted key or an integer inside [ ]")
                self.take("]")
            else:
                return tuple(parts)

    def op(self) -> str:
        self.skip()
        for op in OPS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        raise self.fail(f"expected one of {' '.join(OPS)}")


def parse_gate(text: str) -> Gate:
    scanner = _Scanner(text)
    path = scanner.path()
    op = scanner.op()
    value = scanner.value()
    scanner.skip()
    if scanner.pos != len(text):
        raise scanner.fail("unexpected text after the value")
    if op == "in" and not isinstance(value, list):
        raise GateSyntaxError(f"gate {text!r}: 'in' needs a [list]")
    if op in (">=", "<=", ">", "<") and not _number(value):
        raise GateSyntaxError(f"gate {text!r}: {op} needs a number, not {value!r}")
    return Gate(text=text, path=path, op=op, value=value)
