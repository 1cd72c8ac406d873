"""Our responses against the official SDKs' own typed models, strictly.

Strict means: pydantic's strict mode (no coercion: a float is not an int, a string is not a
number), every Literal and discriminator as the SDK declares it, and no field the SDK does not
know. The SDK models accept unknown fields (extra="allow"), so those are collected from every
nested model and reported, except our documented extensions (EXTENSIONS). Errors are checked
against the dialect's error object.

    problems = check("POST", "/v1/chat/completions", 200, "application/json", body_bytes)
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

# Fields we add on purpose, by SDK model name: vLLM's token ids, prompt cache details the SDK
# types as a model of its own, our server's extras. Anything else unknown is a finding.
EXTENSIONS: dict[str, frozenset[str]] = {
    "ChatCompletion": frozenset({"prompt_token_ids"}),
    "ChatCompletionChunk": frozenset({"prompt_token_ids"}),
    "Choice": frozenset({"token_ids"}),
    "CompletionChoice": frozenset({"token_ids"}),
    # vLLM's and DeepSeek's reasoning field, beside content (serving/api/reasoning_filter.py).
    "ChatCompletionMessage": frozenset({"reasoning_content"}),
    "ChoiceDelta": frozenset({"reasoning_content"}),
}


def _openai(name: str):
    import openai.types as t
    from openai.types import chat, responses
    return {"ChatCompletion": chat.ChatCompletion, "ChatCompletionChunk": chat.ChatCompletionChunk,
            "Completion": t.Completion, "Response": responses.Response,
            "ResponseStreamEvent": responses.ResponseStreamEvent, "Model": t.Model,
            "ErrorObject": t.shared.ErrorObject}[name]


def _anthropic(name: str):
    import anthropic.types as t
    return {"Message": t.Message, "RawMessageStreamEvent": t.RawMessageStreamEvent,
            "MessageTokensCount": t.MessageTokensCount, "ErrorResponse": t.ErrorResponse,
            "ModelInfo": t.ModelInfo}[name]


class _ModelList(BaseModel):
    object: str
    data: list[Any]


class _AnthropicModelList(BaseModel):
    """The page Anthropic's models.list reads (the SDK types it as a generic page)."""
    data: list[Any]
    has_more: bool
    first_id: str | None
    last_id: str | None


# (method, path) -> (dialect, whole-body type, stream event type or None)
ROUTES: dict[tuple[str, str], tuple[str, str, str | None]] = {
    ("POST", "/v1/chat/completions"): ("openai", "ChatCompletion", "ChatCompletionChunk"),
    ("POST", "/v1/completions"): ("openai", "Completion", "Completion"),
    ("POST", "/v1/responses"): ("openai", "Response", "ResponseStreamEvent"),
    ("POST", "/v1/messages"): ("anthropic", "Message", "RawMessageStreamEvent"),
    ("POST", "/v1/messages/count_tokens"): ("anthropic", "MessageTokensCount", None),
}


def route(method: str, path: str, *, anthropic: bool = False) -> tuple[str, str, str | None] | None:
    """What the response to (method, path) must be; `anthropic`: the request carried an
    anthropic-version header, so the models routes answer in Anthropic's shapes."""
    path = path.split("?", 1)[0].rstrip("/")
    if method == "GET" and path == "/v1/models":
        return ("anthropic", "AnthropicModelList", None) if anthropic else ("openai", "ModelList", None)
    if method == "GET" and path.startswith("/v1/models/"):
        return ("anthropic", "ModelInfo", None) if anthropic else ("openai", "Model", None)
    return ROUTES.get((method, path))


@functools.lru_cache(maxsize=None)
def _adapter(dialect: str, name: str) -> TypeAdapter:
    if name == "ModelList":
        return TypeAdapter(_ModelList)
    if name == "AnthropicModelList":
        return TypeAdapter(_AnthropicModelList)
    return TypeAdapter((_openai if dialect == "openai" else _anthropic)(name))


def _extras(value: Any, where: str) -> list[str]:
    """Unknown fields of every SDK model inside value, as dotted paths."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        allowed = EXTENSIONS.get(type(value).__name__, frozenset())
        for key in sorted((value.model_extra or {}).keys() - allowed):
            found.append(f"{where}.{key}" if where else key)
        for key in type(value).model_fields:
            found += _extras(getattr(value, key, None), f"{where}.{key}" if where else key)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found += _extras(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += _extras(item, f"{where}.{key}")
    return found


def validate(dialect: str, name: str, obj: Any) -> list[str]:
    """Problems with one JSON value as the SDK type `name` ([] when it conforms). Validated as
    JSON (strict JSON mode: an ISO string is a datetime, "1" is not an int), as the SDK reads it."""
    try:
        value = _adapter(dialect, name).validate_json(json.dumps(obj), strict=True)
    except ValidationError as exc:
        return [f"{name}: {e['loc'] and '.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                for e in exc.errors()[:5]]
    if name == "ModelList":
        return [p for m in value.data for p in validate(dialect, "Model", m)]
    if name == "AnthropicModelList":
        return [p for m in value.data for p in validate(dialect, "ModelInfo", m)]
    return [f"{name}: unknown field {path}" for path in _extras(value, "")]


def sse_data(body: bytes) -> list[str]:
    """The data payloads of an event stream, in order."""
    out: list[str] = []
    for block in body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n\n"):
        lines = [ln[5:].lstrip(" ") for ln in block.split("\n") if ln.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def check(method: str, path: str, status: int, content_type: str, body: bytes, *,
          anthropic: bool = False) -> dict:
    """{"checked": values validated, "failures": [...]} for one response we served."""
    known = route(method, path, anthropic=anthropic)
    if known is None:
        return {"checked": 0, "failures": []}
    dialect, whole, event = known
    failures: list[str] = []
    checked = 0
    if status >= 400:
        try:
            obj = json.loads(body)
        except ValueError:
            return {"checked": 1, "failures": [f"{status} body is not JSON"]}
        if dialect == "openai":
            inner = obj.get("error") if isinstance(obj, dict) else None
            failures = validate("openai", "ErrorObject", inner) if isinstance(inner, dict) else \
                [f"{status} body has no error object"]
        else:
            failures = validate("anthropic", "ErrorResponse", obj)
        return {"checked": 1, "failures": failures}
    if content_type.startswith("text/event-stream"):
        if event is None:
            return {"checked": 0, "failures": [f"{path} answered with an event stream"]}
        for data in sse_data(body):
            if data == "[DONE]":
                continue
            checked += 1
            try:
                obj = json.loads(data)
            except ValueError:
                failures.append(f"event {checked} is not JSON: {data[:80]}")
                continue
            if dialect == "anthropic" and isinstance(obj, dict) and obj.get("type") == "ping":
                continue  # a keep-alive Anthropic's API sends too; the SDK skips it before typing events
            if dialect == "anthropic" and isinstance(obj, dict) and obj.get("type") == "error":
                failures += validate("anthropic", "ErrorResponse", obj)
            else:
                failures += [f"event {checked}: {p}" for p in validate(dialect, event, obj)]
        return {"checked": checked, "failures": failures[:20]}
    try:
        obj = json.loads(body)
    except ValueError:
        return {"checked": 1, "failures": ["body is not JSON"]}
    return {"checked": 1, "failures": validate(dialect, whole, obj)}
