"""The three tool-calling dialects, as the scenarios see them over HTTP: build a request, read an
answer (whole JSON or SSE lines) into one shape, and build the follow-up turn with a tool result.

An `Answer` is dialect-free: the calls as (id, name, arguments JSON text) and the finish/stop
reason, so the checks in scenarios.py never branch on the dialect. Anthropic returns `input` as an
object when whole and as `input_json_delta` text when streamed; the object is dumped with
json.dumps, so parity for Anthropic compares parsed arguments (see scenarios.stream_parity).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .runner import assemble_stream

PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages"}


@dataclass
class Answer:
    calls: list[dict] = field(default_factory=list)  # {"id", "name", "arguments": JSON text}
    finish: str | None = None
    content: str | None = None
    response_id: str | None = None  # Responses: what previous_response_id continues


def tool_shape(dialect: str, tool: dict) -> dict:
    """One [[tool]] entry in the dialect's own shape."""
    if dialect == "chat":
        return {"type": "function", "function": dict(tool)}
    if dialect == "responses":
        return {"type": "function", **tool}
    return {"name": tool["name"], "description": tool.get("description", ""), "input_schema": tool["parameters"]}


def request(dialect: str, *, prompt: str, tools: list[dict], tool_choice, stream: bool, max_tokens: int,
            model: str | None) -> dict:
    shaped = [tool_shape(dialect, t) for t in tools]
    if dialect == "responses":
        body = {"input": [{"role": "user", "content": prompt}], "tools": shaped, "tool_choice": tool_choice,
                "max_output_tokens": max_tokens}
    else:
        body = {"messages": [{"role": "user", "content": prompt}], "tools": shaped, "tool_choice": tool_choice,
                "max_tokens": max_tokens}
    body.update(temperature=0.0, stream=stream)
    if model is not None:
        body["model"] = model
    return body


def follow_up(dialect: str, first_body: dict, answer: Answer, result: str) -> dict:
    """The second turn: the forced call's result sent back, tool_choice back to auto, not streamed."""
    body = {**first_body, "stream": False}
    auto = {"type": "auto"} if dialect == "anthropic" else "auto"
    body["tool_choice"] = auto
    if dialect == "chat":
        body["messages"] = [*first_body["messages"],
                            {"role": "assistant", "content": None, "tool_calls": [
                                {"id": c["id"], "type": "function",
                                 "function": {"name": c["name"], "arguments": c["arguments"]}} for c in answer.calls]},
                            *[{"role": "tool", "tool_call_id": c["id"], "content": result} for c in answer.calls]]
    elif dialect == "responses":
        body["previous_response_id"] = answer.response_id
        body["input"] = [{"type": "function_call_output", "call_id": c["id"], "output": result} for c in answer.calls]
    else:
        body["messages"] = [*first_body["messages"],
                            {"role": "assistant", "content": [
                                {"type": "tool_use", "id": c["id"], "name": c["name"],
                                 "input": json.loads(c["arguments"] or "{}")} for c in answer.calls]},
                            {"role": "user", "content": [
                                {"type": "tool_result", "tool_use_id": c["id"], "content": result}
                                for c in answer.calls]}]
    return body


def read_whole(dialect: str, data: dict) -> Answer:
    if dialect == "chat":
        choice = data["choices"][0]
        message = choice.get("message") or {}
        return Answer([{"id": tc.get("id"), "name": (tc.get("function") or {}).get("name"),
                        "arguments": (tc.get("function") or {}).get("arguments")}
                       for tc in message.get("tool_calls") or []], choice.get("finish_reason"), message.get("content"))
    if dialect == "responses":
        calls = [{"id": it.get("call_id"), "name": it.get("name"), "arguments": it.get("arguments")}
                 for it in data.get("output") or [] if it.get("type") == "function_call"]
        return Answer(calls, data.get("status"), None, data.get("id"))
    calls = [{"id": b.get("id"), "name": b.get("name"), "arguments": json.dumps(b.get("input"))}
             for b in data.get("content") or [] if b.get("type") == "tool_use"]
    text = "".join(b.get("text", "") for b in data.get("content") or [] if b.get("type") == "text")
    return Answer(calls, data.get("stop_reason"), text or None)


def _events(lines: list[str]) -> list[dict]:
    return [json.loads(line[5:]) for line in lines
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]")]


def read_stream(dialect: str, lines: list[str]) -> Answer:
    if dialect == "chat":
        message, choice, _ = assemble_stream(lines)
        return read_whole("chat", {"choices": [{**choice, "message": message}]})
    if dialect == "responses":
        # arguments from response.function_call_arguments.done (the event clients act on), the
        # name and call_id from the finished item; status from response.completed
        args, items, answer = {}, [], Answer()
        for ev in _events(lines):
            if ev.get("type") == "response.function_call_arguments.done":
                args[ev.get("item_id")] = ev.get("arguments")
            elif ev.get("type") == "response.output_item.done":
                items += [ev["item"]] if (ev.get("item") or {}).get("type") == "function_call" else []
            elif ev.get("type") in ("response.completed", "response.incomplete", "response.failed"):
                answer.finish, answer.response_id = ev["response"].get("status"), ev["response"].get("id")
        answer.calls = [{"id": it.get("call_id"), "name": it.get("name"),
                         "arguments": args.get(it.get("id"), it.get("arguments"))} for it in items]
        return answer
    blocks, answer = {}, Answer()
    for ev in _events(lines):
        kind = ev.get("type")
        if kind == "content_block_start" and (ev.get("content_block") or {}).get("type") == "tool_use":
            cb = ev["content_block"]
            blocks[ev.get("index")] = {"id": cb.get("id"), "name": cb.get("name"), "arguments": ""}
        elif kind == "content_block_delta" and (ev.get("delta") or {}).get("type") == "input_json_delta":
            blocks[ev.get("index")]["arguments"] += ev["delta"].get("partial_json") or ""
        elif kind == "message_delta":
            answer.finish = (ev.get("delta") or {}).get("stop_reason") or answer.finish
    answer.calls = [blocks[i] for i in sorted(blocks)]
    return answer
