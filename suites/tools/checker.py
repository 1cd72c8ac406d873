"""Judge a model's tool calls against BFCL's possible answers (our code, after BFCL's published AST rules).

A call is (BFCL function name, arguments dict). One expected call is {name: {param: [allowed values]}}:
- the name must match;
- every parameter the function doc requires is present, and no parameter is unknown (absent from
  the doc or from the possible answer);
- each value has the doc's Python-ish type (string, integer, float (an int is accepted), boolean,
  array/tuple (a JSON list), dict, any), one level of array item types checked too; a value of
  the possible answers' own type is also accepted (BFCL's "variable" rule: an answer written as
  a name where the doc says e.g. integer);
- each value is among the allowed values: strings compared after BFCL's normalisation (lowercase;
  spaces and , . / - _ * ^ removed; ' read as "), lists element by element, dicts key by key
  (each key's value among that key's allowed values; a key whose allowed values hold "" may be
  left out);
- a parameter of the possible answer that is absent from the call must allow "" (may be omitted).
Categories: simple and multiple want exactly the one expected call; parallel (and parallel_multiple)
want the multiset of expected calls in any order (a perfect matching, not BFCL's greedy first
match); irrelevance is right only when no call was made in any form, so call-like markup left in
the content fails it too. Deviations from BFCL's code, all in the model's favour only where BFCL is
inconsistent: strings are normalised at every depth (BFCL: not inside nested lists, nor for
"variable" values) and parallel calls are matched optimally rather than greedily.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .convert import bfcl_name

PY_TYPES = {"string": (str,), "integer": (int,), "float": (float, int), "number": (float, int),
            "boolean": (bool,), "bool": (bool,), "array": (list,), "tuple": (list,), "list": (list,),
            "dict": (dict,), "object": (dict,)}
OMITTED = ""  # in a list of allowed values: the parameter may be left out


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str


Call = tuple[str, dict]


def normalise(text: str) -> str:
    return re.sub(r"[ ,./\-_*^]", "", text).lower().replace("'", '"')


def kind(value) -> str:
    """The JSON type of a value, telling booleans from numbers (Python's bool is an int)."""
    return "boolean" if isinstance(value, bool) else type(value).__name__


def has_type(value, bfcl_type: str | None) -> bool:
    if bfcl_type in (None, "any") or bfcl_type not in PY_TYPES:
        return True
    if isinstance(value, bool):
        return bfcl_type in ("boolean", "bool")
    return isinstance(value, PY_TYPES[bfcl_type])


def same(value, allowed) -> bool:
    """value (from the model) equals one allowed value, under BFCL's comparisons."""
    if isinstance(value, bool) or isinstance(allowed, bool):
        return isinstance(value, bool) and isinstance(allowed, bool) and value == allowed
    if isinstance(value, str) and isinstance(allowed, str):
        return normalise(value) == normalise(allowed)
    if isinstance(value, (int, float)) and isinstance(allowed, (int, float)):
        return value == allowed
    if isinstance(value, list) and isinstance(allowed, list):
        return len(value) == len(allowed) and all(same(v, a) for v, a in zip(value, allowed, strict=True))
    if isinstance(value, dict) and isinstance(allowed, dict):
        return _same_dict(value, allowed)
    return value == allowed


def _same_dict(value: dict, allowed: dict) -> bool:
    """A dict answer maps each key to a list of its allowed values (BFCL's form; a value that is
    not a list is read as the one allowed value)."""
    def options(key) -> list:
        return allowed[key] if isinstance(allowed[key], list) else [allowed[key]]

    if any(key not in allowed or not one_of(v, options(key)) for key, v in value.items()):
        return False
    return all(key in value or OMITTED in options(key) for key in allowed)


def one_of(value, allowed: list) -> bool:
    return any(same(value, a) for a in allowed)


def _value_problem(param: str, value, spec: dict, allowed: list) -> str | None:
    declared = spec.get("type")
    answer_kinds = {kind(a) for a in allowed if a != OMITTED}
    variable = kind(value) in answer_kinds and not has_type(value, declared)
    if not has_type(value, declared) and not variable:
        return f"parameter {param!r}: expected type {declared}, got {kind(value)} {value!r}"
    item_type = (spec.get("items") or {}).get("type") if declared in ("array", "tuple") else None
    if item_type and not variable and isinstance(value, list):
        # The "variable" rule one level down: items of the answers' own item type are accepted.
        item_kinds = {kind(x) for a in allowed if isinstance(a, list) for x in a}
        for item in value:
            if not has_type(item, item_type) and kind(item) not in item_kinds:
                return f"parameter {param!r}: items must be {item_type}, got {kind(item)} {item!r}"
    if not one_of(value, allowed):
        shown = [a for a in allowed if a != OMITTED]
        return f"parameter {param!r}: {value!r} is not an allowed value {shown!r}"
    return None


def call_problem(call: Call, expected: dict, docs: dict[str, dict]) -> str | None:
    """Why `call` does not match one expected call {name: {param: allowed}}; None when it does."""
    (want, answer), = expected.items()
    name, args = call
    if name != want:
        return f"called {name!r}, expected {want!r}"
    params = (docs.get(want) or {}).get("parameters") or {}
    props, required = params.get("properties") or {}, params.get("required") or []
    for p in required:
        if p not in args:
            return f"{name}: required parameter {p!r} missing"
    for p, value in args.items():
        if p not in props or p not in answer:
            return f"{name}: unexpected parameter {p!r}"
        if problem := _value_problem(p, value, props[p], answer[p]):
            return f"{name}: {problem}"
    for p, allowed in answer.items():
        if p not in args and OMITTED not in allowed:
            return f"{name}: parameter {p!r} left out, but the answer has no default for it"
    return None


def _match(calls: list[Call], expected: list[dict], docs: dict) -> str | None:
    """None when the calls match the expected calls one to one in some order; else why not."""
    fits = [[call_problem(c, e, docs) is None for c in calls] for e in expected]
    owner: dict[int, int] = {}  # call index -> expected index (Kuhn's augmenting paths)

    def place(e: int, seen: set[int]) -> bool:
        for c, ok in enumerate(fits[e]):
            if ok and c not in seen:
                seen.add(c)
                if c not in owner or place(owner[c], seen):
                    owner[c] = e
                    return True
        return False

    for e in range(len(expected)):
        if not place(e, set()):
            want = next(iter(expected[e]))
            same_name = [c for c in calls if c[0] == want]
            why = call_problem(same_name[0], expected[e], docs) if same_name else f"no call to {want!r}"
            return f"expected call {e + 1} ({want}) has no matching call: {why}"
    return None


def check(checker: str, *, calls: list[Call], functions: list[dict], answers: list[dict] | None,
          content_call: bool = False) -> Verdict:
    """The verdict on one response. `content_call`: the content holds call-like markup."""
    if checker == "irrelevance":
        if calls:
            return Verdict(False, f"made {len(calls)} call(s) ({', '.join(c[0] for c in calls)}); none fits")
        if content_call:
            return Verdict(False, "no structured call, but the content holds a call")
        return Verdict(True, "no call")
    docs = {d["name"]: d for d in functions}
    expected = answers or []
    if len(calls) != len(expected):
        return Verdict(False, f"made {len(calls)} call(s), expected {len(expected)}")
    if checker in ("simple", "multiple"):
        problem = call_problem(calls[0], expected[0], docs)
    elif checker == "parallel":
        problem = _match(calls, expected, docs)
    else:
        raise ValueError(f"unknown checker {checker!r}")
    return Verdict(problem is None, problem or "matches the possible answer")


def decode_calls(tool_calls: list[dict], names: dict[str, str]) -> tuple[list[Call], str | None]:
    """Recorded tool calls ({name, arguments: JSON text}) as (BFCL name, args); a problem if one
    call's arguments are not a JSON object (such a response cannot be right)."""
    calls = []
    for i, tc in enumerate(tool_calls, start=1):
        text = tc.get("arguments")
        try:
            args = json.loads(text) if isinstance(text, str) else text
        except ValueError as exc:
            return calls, f"call {i} ({tc.get('name')}): arguments are not JSON: {exc}"
        if not isinstance(args, dict):
            return calls, f"call {i} ({tc.get('name')}): arguments are {kind(args)}, not a JSON object"
        calls.append((bfcl_name(str(tc.get("name")), names), args))
    return calls, None
