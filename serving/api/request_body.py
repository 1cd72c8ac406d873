"""Read a JSON body into a typed model, turning every failure into a 400."""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from .errors import InvalidRequest, PayloadTooLarge

MAX_BODY_BYTES = 32 * 1024 * 1024


def read_json(req) -> dict:
    length = req.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {MAX_BODY_BYTES}")
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body exceeds {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"could not parse the JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the JSON body must be an object")
    return body


def parse_body(req, model: type[BaseModel]) -> BaseModel:
    body = read_json(req)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        kind = "missing required field" if first["type"] == "missing" else first["msg"]
        raise InvalidRequest(f"{param}: {kind}" if param else kind, param=param) from None
