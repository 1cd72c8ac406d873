"""Tool scenarios (scenarios.toml): fixed requests that check the server's tool-calling contract
per dialect, one `tool_scenario` raw record each. Data names a check kind; CHECKS maps it to a
small function (Answer(s) -> (passed, reason)). HTTP only (httpx), sequential: a handful of
requests, and a closed loop of one keeps latencies comparable with nothing else in flight.

status "error" = the request itself failed (transport, non-200, unreadable body): `passed` is null,
never False, so a broken transport is not read as the server breaking the contract.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from jsonschema import Draft202012Validator

from .dialects import PATHS, Answer, follow_up, read_stream, read_whole, request

SCENARIOS = Path(__file__).with_name("scenarios.toml")
CHECK_KINDS = ("multi_turn", "stream_parity", "no_call", "any_call", "named_call", "answered", "schema_valid")


@dataclass(frozen=True)
class Scenario:
    id: str
    dialect: str
    tools: tuple[dict, ...]
    tool_choice: object
    check: str
    stream: bool = False
    name: str | None = None
    prompt: str = ""


@dataclass(frozen=True)
class Settings:
    max_tokens: int
    timeout_s: float
    tool_result: str
    scenarios: tuple[Scenario, ...]


def load(path: Path = SCENARIOS) -> Settings:
    data = tomllib.loads(path.read_text())
    run, tools = data["run"], {t["name"]: t for t in data["tool"]}
    out, seen = [], set()
    for s in data["scenario"]:
        if s["dialect"] not in PATHS or s["check"] not in CHECK_KINDS or s["id"] in seen:
            raise ValueError(f"scenario {s['id']!r}: unknown dialect or check kind, or a repeated id")
        if s["check"] == "named_call" and s.get("name") not in tools:
            raise ValueError(f"scenario {s['id']!r}: named_call needs `name`, one of its tools")
        seen.add(s["id"])
        out.append(Scenario(s["id"], s["dialect"], tuple(tools[n] for n in s["tools"]), s["tool_choice"],
                            s["check"], bool(s.get("stream", False)), s.get("name"),
                            s.get("prompt", run["prompt"])))
    return Settings(run["max_tokens"], float(run["timeout_s"]), run["tool_result"], tuple(out))


class RequestFailed(Exception):
    """The request did not produce a readable 200 answer (the record's status becomes error)."""


def _post(client: httpx.Client, base_url: str, dialect: str, body: dict, timeout_s: float) -> Answer:
    url = base_url.rstrip("/") + PATHS[dialect]
    try:
        if body["stream"]:
            with client.stream("POST", url, json=body, timeout=timeout_s) as resp:
                if resp.status_code != 200:
                    raise RequestFailed(f"HTTP {resp.status_code}: {resp.read().decode(errors='replace')[:300]}")
                return read_stream(dialect, list(resp.iter_lines()))
        resp = client.post(url, json=body, timeout=timeout_s)
        if resp.status_code != 200:
            raise RequestFailed(f"HTTP {resp.status_code}: {resp.text[:300]}")
        return read_whole(dialect, resp.json())
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise RequestFailed(f"{type(exc).__name__}: {exc}"[:300]) from exc


# --- checks: each takes the scenario and its answer(s), returns (passed, reason) ------------------

def _args(call: dict) -> object:
    return json.loads(call["arguments"] or "{}")


def no_call(s: Scenario, a: Answer) -> tuple[bool, str]:
    return (not a.calls, "no tool call" if not a.calls else f"{len(a.calls)} call(s) under tool_choice none")


def any_call(s: Scenario, a: Answer) -> tuple[bool, str]:
    names = {t["name"] for t in s.tools}
    if not a.calls:
        return False, f"no tool call (finish {a.finish!r})"
    bad = [c["name"] for c in a.calls if c["name"] not in names]
    return (not bad, f"{len(a.calls)} call(s)" if not bad else f"calls a tool not sent: {bad}")


def named_call(s: Scenario, a: Answer) -> tuple[bool, str]:
    if not a.calls:
        return False, f"no tool call (finish {a.finish!r})"
    other = [c["name"] for c in a.calls if c["name"] != s.name]
    return (not other, f"every call names {s.name}" if not other else f"calls other than {s.name}: {other}")


def answered(s: Scenario, a: Answer) -> tuple[bool, str]:
    """tool_choice auto: either answer is right; the contract is a finish reason and known names."""
    if a.finish is None:
        return False, "no finish/stop reason"
    return any_call(s, a) if a.calls else (True, f"text answer (finish {a.finish!r})")


def schema_valid(s: Scenario, a: Answer) -> tuple[bool, str]:
    schemas = {t["name"]: t["parameters"] for t in s.tools}
    if not a.calls:
        return False, f"no tool call (finish {a.finish!r})"
    for call in a.calls:
        if call["name"] not in schemas:
            return False, f"calls a tool not sent: {call['name']}"
        try:
            errors = [e.message for e in Draft202012Validator(schemas[call["name"]]).iter_errors(_args(call))]
        except json.JSONDecodeError:
            return False, f"arguments are not JSON: {call['arguments']!r}"[:300]
        if errors:
            return False, f"{call['name']} arguments invalid: {'; '.join(errors)}"[:300]
    return True, "every call's arguments validate against its schema"


def stream_parity(s: Scenario, whole: Answer, streamed: Answer) -> tuple[bool, str]:
    """Same names and same arguments; text-identical where both sides are text (chat, Responses),
    equal as parsed JSON for Anthropic, whose whole answer carries `input` as an object."""
    if not whole.calls:
        return False, "the whole answer holds no call to compare"
    names = [c["name"] for c in whole.calls], [c["name"] for c in streamed.calls]
    if names[0] != names[1]:
        return False, f"names differ: whole {names[0]}, streamed {names[1]}"
    for w, st in zip(whole.calls, streamed.calls, strict=True):
        try:
            same = _args(w) == _args(st) if s.dialect == "anthropic" else w["arguments"] == st["arguments"]
        except json.JSONDecodeError:
            same = False
        if not same:
            return False, f"arguments differ: whole {w['arguments']!r}, streamed {st['arguments']!r}"[:300]
    return True, f"{len(whole.calls)} call(s) identical streamed and whole"


def multi_turn(s: Scenario, first: Answer, second: Answer) -> tuple[bool, str]:
    if second.finish is None:
        return False, "the answer to the tool result has no finish/stop reason"
    return True, f"tool result answered (finish {second.finish!r})"


SINGLE: dict[str, Callable[[Scenario, Answer], tuple[bool, str]]] = {
    "no_call": no_call, "any_call": any_call, "named_call": named_call, "answered": answered,
    "schema_valid": schema_valid}


def run_one(client: httpx.Client, base_url: str, s: Scenario, settings: Settings, *, model: str | None,
            server: str) -> dict:
    record = {"type": "tool_scenario", "server": server, "id": s.id, "dialect": s.dialect, "check": s.check,
              "status": "error", "passed": None, "reason": "", "latency_s": None}
    body = request(s.dialect, prompt=s.prompt, tools=list(s.tools), tool_choice=s.tool_choice,
                   stream=s.stream and s.check not in ("stream_parity", "multi_turn"),
                   max_tokens=settings.max_tokens, model=model)
    post = lambda b: _post(client, base_url, s.dialect, b, settings.timeout_s)  # noqa: E731
    sent = time.perf_counter()
    try:
        first = post(body)
        if s.check == "stream_parity":
            passed, reason = stream_parity(s, first, post({**body, "stream": True}))
        elif s.check == "multi_turn":
            if not first.calls:  # forced choices should never get here; say so rather than guess
                passed, reason = False, f"the forced first turn returned no call (finish {first.finish!r})"
            else:
                passed, reason = multi_turn(s, first, post(follow_up(s.dialect, body, first, settings.tool_result)))
        else:
            passed, reason = SINGLE[s.check](s, first)
        record.update(status="ok", passed=bool(passed), reason=reason)
    except RequestFailed as exc:
        record["reason"] = f"not judged: {exc}"
    finally:
        record["latency_s"] = time.perf_counter() - sent
    return record


def run_scenarios(base_url: str, *, model: str | None, server: str = "ours", settings: Settings | None = None,
                  on_done: Callable[[dict], None] | None = None, transport=None) -> list[dict]:
    """One tool_scenario record per scenario, in file order; `transport` lets tests fake the server."""
    settings = settings or load()
    records = []
    with httpx.Client(transport=transport) as client:
        for s in settings.scenarios:
            records.append(run_one(client, base_url, s, settings, model=model, server=server))
            if on_done:
                on_done(records[-1])
    return records
