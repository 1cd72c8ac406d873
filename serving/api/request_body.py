"""Read a JSON body into a typed model, turning every failure into a 4xx."""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from .errors import InvalidRequest, PayloadTooLarge


class BodyLimit:
    """Refuse an oversized body from its Content-Length, before anything reads or parses it."""

    def __init__(self, max_bytes: int, *, per_path: dict[str, tuple[int, str]] | None = None) -> None:
        self.max_bytes = max_bytes
        # path -> (limit, the flag that sets it): audio uploads are allowed more than JSON bodies.
        self.per_path = dict(per_path or {})

    def process_request(self, req, resp) -> None:
        length = req.content_length
        limit, flag = self.per_path.get(req.path, (self.max_bytes, "--max-body-bytes"))
        if length is not None and length > limit:
            raise PayloadTooLarge(f"request body is {length} bytes; this server's limit is {limit} ({flag})")


def read_json(req, *, max_bytes: int) -> dict:
    raw = req.bounded_stream.read(max_bytes + 1)
    if len(raw) > max_bytes:  # chunked uploads carry no Content-Length
        raise PayloadTooLarge(f"request body exceeds this server's limit of {max_bytes} bytes (--max-body-bytes)")
    if not raw.strip():
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"could not parse the JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the JSON body must be an object")
    return body


def _is_field(part) -> bool:
    """Pydantic puts union branches ("literal['a','b']", "NamedToolChoice", "str") in error
    locations; the client only knows its own field names and list indexes."""
    if isinstance(part, int):
        return True
    return not (any(c in part for c in "[(,'") or part[:1].isupper() or part in _BRANCH_TYPES)


_BRANCH_TYPES = {"str", "int", "float", "bool", "list", "dict", "function-after", "function-before"}


def validate(raw: dict, model: type[BaseModel]):
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if _is_field(p)) or None
        kind = "missing required field" if first["type"] == "missing" else first["msg"]
        raise InvalidRequest(f"{param}: {kind}" if param else kind, param=param) from None
