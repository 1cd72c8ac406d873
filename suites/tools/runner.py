"""Send each case under each mode as one OpenAI chat request; turn each answer into a raw record.

Closed loop (a few requests in flight), greedy, `parallel_tool_calls: true`, `tool_choice` = the
mode. HTTP only: the server is a black box. A record holds what the server returned (content, the
tool calls with their arguments as the JSON text received), the checker's verdict and the parse
fidelity fields, so every summary number can be recomputed from raw.jsonl and the pinned data.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
from jsonschema import Draft202012Validator

from .cases import ToolCase
from .checker import check, decode_calls
from .convert import to_tools
from .markup import call_markup

NOT_APPLICABLE = ("tool_choice 'required' forces a call, and an irrelevance case is right only without one; "
                  "json_schema answers one function's arguments, so it asks simple cases only")


JSON_MODE = "json_schema"


def applicable(case: ToolCase, mode: str) -> bool:
    """required forces a call, so irrelevance (no call is right) cannot be asked; json_schema
    answers one function's arguments, so only single-function (simple) cases fit it."""
    if mode == JSON_MODE:
        return case.checker == "simple" and len(case.functions) == 1
    return not (mode == "required" and case.checker == "irrelevance")


def request_body(case: ToolCase, mode: str, *, model: str | None, max_tokens: int,
                 stream: bool) -> tuple[dict, dict[str, str]]:
    """(chat request body, {tool name sent: BFCL name})."""
    tools, names = to_tools(case.functions)
    if mode == JSON_MODE:
        fn = tools[0]["function"]
        body = {"messages": case.messages, "temperature": 0.0, "max_tokens": max_tokens, "stream": stream,
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "arguments", "strict": True, "schema": fn["parameters"]}}}
    else:
        body = {"messages": case.messages, "tools": tools, "tool_choice": mode, "parallel_tool_calls": True,
                "temperature": 0.0, "max_tokens": max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if model is not None:
        body["model"] = model
    return body, names


def _base(case: ToolCase, mode: str, server: str) -> dict:
    return {"type": "tool_case", "server": server, "id": case.id, "category": case.category, "mode": mode,
            "status": "error", "error": None, "http_status": None, "latency_s": None, "content": None,
            "tool_calls": [], "finish_reason": None, "usage": None, "correct": None, "reason": "",
            "parse_fidelity": None, "schema_valid": None}


def fidelity(tool_calls: list[dict], content: str | None) -> dict:
    """A response contains a call when it has a structured call or complete call markup. Only
    the opening of a JSON call (`json_partial`: cut off by max_tokens, or arguments that are not
    JSON, such as `3 * 10**8`) is a call no parser could return, so it is a model failure, not a
    parse miss: counted apart as `cut_off`, outside parse fidelity's denominator."""
    markup = call_markup(content)
    structured = len(tool_calls)
    complete = [m for m in markup if m != "json_partial"]
    return {"structured_calls": structured, "content_markup": markup,
            "contains_call": bool(structured or complete), "clean": bool(structured and not markup),
            "cut_off": "json_partial" in markup}


def schema_valid(tool_calls: list[dict], case: ToolCase) -> bool:
    """At least one call, and every call names a tool sent and has arguments valid for its schema."""
    tools, _ = to_tools(case.functions)
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    if not tool_calls:
        return False
    for call in tool_calls:
        if call["name"] not in schemas:
            return False
        try:
            arguments = json.loads(call["arguments"] or "{}")
        except json.JSONDecodeError:
            return False
        if not Draft202012Validator(schemas[call["name"]]).is_valid(arguments):
            return False
    return True


def _json_valid(content: str | None, case: ToolCase) -> bool:
    """The content is JSON valid for the case's one function's parameter schema."""
    tools, _ = to_tools(case.functions)
    try:
        value = json.loads(content or "")
    except json.JSONDecodeError:
        return False
    return Draft202012Validator(tools[0]["function"]["parameters"]).is_valid(value)


def judge(record: dict, case: ToolCase, names: dict[str, str]) -> dict:
    """Fill parse_fidelity, schema_valid, correct and reason of an ok record (pure: the
    committed-evidence tests recompute it from the record and the data)."""
    record["parse_fidelity"] = pf = fidelity(record["tool_calls"], record["content"])
    if record["mode"] == JSON_MODE:  # the content is the one function's arguments
        sent = next(iter(names))
        as_call = [{"id": None, "name": sent, "arguments": record["content"] or ""}]
        record["schema_valid"] = _json_valid(record["content"], case)
        calls, problem = decode_calls(as_call, names)
    else:
        record["schema_valid"] = schema_valid(record["tool_calls"], case)
        calls, problem = decode_calls(record["tool_calls"], names)
    if problem:
        record["correct"], record["reason"] = False, problem
        return record
    verdict = check(case.checker, calls=calls, functions=case.functions, answers=case.answers,
                    content_call=bool(pf["content_markup"]))
    record["correct"], record["reason"] = verdict.correct, verdict.reason
    return record


def _from_message(record: dict, message: dict, choice: dict, usage: dict | None) -> None:
    record["content"] = message.get("content")
    record["tool_calls"] = [{"id": tc.get("id"), "name": (tc.get("function") or {}).get("name"),
                             "arguments": (tc.get("function") or {}).get("arguments")}
                            for tc in message.get("tool_calls") or []]
    record["finish_reason"] = choice.get("finish_reason")
    if usage:
        record["usage"] = {"prompt_tokens": usage.get("prompt_tokens"),
                           "completion_tokens": usage.get("completion_tokens")}


def assemble_stream(lines: list[str]) -> tuple[dict, dict, dict | None]:
    """(message, choice, usage) from SSE `data:` lines: content joined, tool-call deltas merged by index."""
    content, calls, choice, usage = [], {}, {}, None
    for line in lines:
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        chunk = json.loads(line[5:])
        usage = chunk.get("usage") or usage
        for ch in chunk.get("choices") or []:
            delta = ch.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc.get("index", len(calls)),
                                        {"id": None, "function": {"name": "", "arguments": ""}})
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            if ch.get("finish_reason"):
                choice["finish_reason"] = ch["finish_reason"]
    message = {"content": "".join(content) if content else None, "tool_calls": [calls[i] for i in sorted(calls)]}
    return message, choice, usage


async def _send(client: httpx.AsyncClient, url: str, body: dict, record: dict, *, timeout_s: float) -> None:
    sent = time.perf_counter()
    try:
        if body["stream"]:
            async with client.stream("POST", url, json=body, timeout=timeout_s) as resp:
                record["http_status"] = resp.status_code
                if resp.status_code != 200:
                    record["error"] = f"HTTP {resp.status_code}: {(await resp.aread()).decode(errors='replace')[:500]}"
                    return
                message, choice, usage = assemble_stream([line async for line in resp.aiter_lines()])
        else:
            resp = await client.post(url, json=body, timeout=timeout_s)
            record["http_status"] = resp.status_code
            if resp.status_code != 200:
                record["error"] = f"HTTP {resp.status_code}: {resp.text[:500]}"
                return
            answer = resp.json()
            choice = answer["choices"][0]
            message, usage = choice.get("message") or {}, answer.get("usage")
        _from_message(record, message, choice, usage)
        record["status"] = "ok"
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        record["latency_s"] = time.perf_counter() - sent


async def _run(base_url: str, units: list[tuple[ToolCase, str]], *, model: str | None, max_tokens: int,
               stream: bool, concurrency: int, timeout_s: float, server: str,
               on_done: Callable[[dict], None] | None, transport) -> list[dict]:
    url = base_url.rstrip("/") + "/v1/chat/completions"
    slots = asyncio.Semaphore(concurrency)
    records: list[dict | None] = [None] * len(units)

    async def one(i: int, case: ToolCase, mode: str, client: httpx.AsyncClient) -> None:
        record = _base(case, mode, server)
        if not applicable(case, mode):
            record.update(status="not_applicable", reason=NOT_APPLICABLE)
        else:
            body, names = request_body(case, mode, model=model, max_tokens=max_tokens, stream=stream)
            async with slots:
                await _send(client, url, body, record, timeout_s=timeout_s)
            if record["status"] == "ok":
                judge(record, case, names)
            else:
                record["reason"] = "not judged: the request failed"
        records[i] = record
        if on_done:
            on_done(record)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, transport=transport) as client:
        await asyncio.gather(*(one(i, case, mode, client) for i, (case, mode) in enumerate(units)))
    return [r for r in records if r is not None]


def run_cases(base_url: str, units: list[tuple[ToolCase, str]], *, model: str | None, max_tokens: int,
              stream: bool = False, concurrency: int = 4, timeout_s: float = 900, server: str = "ours",
              on_done: Callable[[dict], None] | None = None, transport=None) -> list[dict]:
    """One record per (case, mode), in the order given; `transport` lets tests fake the server."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    return asyncio.run(_run(base_url, units, model=model, max_tokens=max_tokens, stream=stream,
                            concurrency=concurrency, timeout_s=timeout_s, server=server, on_done=on_done,
                            transport=transport))
