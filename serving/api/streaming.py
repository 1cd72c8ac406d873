"""Drive one engine handle to an SSE stream or to a whole response."""

from __future__ import annotations

import json
import logging

from ..engine.request import Finished, RequestHandle, TextDelta
from .errors import EngineFailure, openai_error_body

log = logging.getLogger("mlx_proof.api")


def sse(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode("utf-8")


def disconnect_probe(environ: dict):
    """waitress (with channel_request_lookahead > 0) reports a client that has gone."""
    probe = environ.get("waitress.client_disconnected")
    return probe if callable(probe) else (lambda: False)


def stream_events(handle: RequestHandle, shape, *, include_usage: bool, prefix: str = "",
                  is_disconnected=lambda: False):
    """Yield SSE bytes; closing the generator early (client gone) cancels generation."""
    finished = None
    try:
        for chunk in shape.head_chunks():
            yield sse(chunk)
        if prefix:
            yield sse(shape.delta_chunk(prefix))
        for event in handle.iter_events(is_disconnected=is_disconnected):
            if isinstance(event, TextDelta):
                yield sse(shape.delta_chunk(event.text))
            elif isinstance(event, Finished):
                finished = event
        if finished is None:
            return
        if finished.reason == "error":
            yield sse(openai_error_body(EngineFailure(finished.error or "generation failed")))
            return
        yield sse(shape.finish_chunk(finished.reason))
        if include_usage:
            yield sse(shape.usage_chunk(finished.prompt_tokens, finished.completion_tokens))
        yield sse("[DONE]")
    finally:
        if finished is None:
            handle.cancel()


def collect(handle: RequestHandle, shape, *, prefix: str = "", is_disconnected=lambda: False) -> dict:
    parts = [prefix]
    finished = None
    for event in handle.iter_events(is_disconnected=is_disconnected):
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, Finished):
            finished = event
    if finished is None:  # the client went away; nobody reads this
        return {}
    if finished.reason == "error":
        raise EngineFailure(finished.error or "generation failed")
    return shape.whole("".join(parts), finished.reason, finished.prompt_tokens, finished.completion_tokens)
