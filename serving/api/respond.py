"""Drive one prepared request through the engine to a stream or a whole response.

Shared by every dialect: submit, translate engine refusals and failures into
APIErrors, and run the dialect's encoder over the events. Encoding happens
here, on the HTTP thread, never on the engine's.
"""

from __future__ import annotations

import json
import logging

from ..engine.request import EngineBusy, EngineDown, Finished, StepOutput
from ..telemetry.observer import NO_OBSERVER
from .dialect import Comment, Frame, Prepared
from .errors import APIError, EngineFailure, EngineUnavailable, GenerationTimeout, RateLimited
from .reasoning_filter import ReasoningText
from .tool_calls import ToolCallFilter, ToolCallOut

log = logging.getLogger("mlx_proof.api")

RETRY_AFTER_S = "1"


def sse_bytes(frame: Frame) -> bytes:
    if isinstance(frame, Comment):
        return f": {frame.data}\n\n".encode("utf-8")
    data = frame.data if isinstance(frame.data, str) else json.dumps(frame.data, ensure_ascii=False)
    head = f"event: {frame.event}\n" if frame.event else ""
    return f"{head}data: {data}\n\n".encode("utf-8")


def disconnect_probe(environ: dict):
    """waitress (with channel_request_lookahead > 0) reports a client that has gone."""
    probe = environ.get("waitress.client_disconnected")
    return probe if callable(probe) else (lambda: False)


def submit(engine, prepared: Prepared):
    try:
        return engine.submit(prepared.request)
    except EngineBusy as exc:
        raise RateLimited(f"the server is busy: {exc}; retry shortly",
                          headers={"Retry-After": RETRY_AFTER_S}) from None
    except EngineDown as exc:
        raise EngineUnavailable(f"the generation engine is not running: {exc}") from None


def failure(fin: Finished) -> APIError:
    """The APIError a failed generation becomes."""
    if fin.reason == "timeout":
        return GenerationTimeout(fin.error or "generation timed out")
    if fin.error and "engine stopped" in fin.error:
        return EngineUnavailable(fin.error)
    return EngineFailure(fin.error or "generation failed")


class _Idle:
    pass


IDLE = _Idle()


def _observed(events, observer):
    """Every engine event passes the request's observer (token timing, usage, finish)."""
    for event in events:
        if event is not IDLE:
            observer.event(event)
        yield event


def _through(filter_, events):
    """Events through one output filter (reasoning, tool calls): steps are fed to it, a normal
    finish collects what it held back; everything else passes untouched."""
    for event in events:
        if isinstance(event, StepOutput):
            yield from filter_.feed(event)
        elif isinstance(event, Finished) and event.reason not in ("error", "timeout"):
            held, finished = filter_.finish(event)
            yield from held
            yield finished
        else:
            yield event


def _events(handle, prepared: Prepared, parser, *, is_disconnected, idle_s: float | None = None,
            observer=NO_OBSERVER):
    """The handle's events (IDLE markers at most every idle_s while none come), through the
    reasoning filter when the server parses reasoning, then the tool-call filter when the
    request has tools: the tool parser reads the answer only."""
    events = _observed(handle.iter_events(is_disconnected=is_disconnected, idle_s=idle_s, idle=IDLE), observer)
    if prepared.reasoning is not None:
        events = _through(prepared.reasoning.filter(), events)
    if prepared.tools.active:
        events = _through(ToolCallFilter(parser, prepared.tools), events)
    for event in events:
        if isinstance(event, Finished):
            observer.event(event)  # the filters' finish replaces the engine's (its reason may be tool_calls)
        yield event


def stream(handle, prepared: Prepared, *, parser=None, is_disconnected=lambda: False,
           idle_s: float | None = None, observer=NO_OBSERVER):
    """Yield SSE bytes; closing the generator early (client gone) cancels generation."""
    enc = prepared.encoder
    finished = None
    try:
        for frame in enc.head():
            yield sse_bytes(frame)
        for event in _events(handle, prepared, parser, is_disconnected=is_disconnected, idle_s=idle_s,
                             observer=observer):
            if event is IDLE:
                frames = enc.idle()
            elif isinstance(event, StepOutput):
                frames = enc.step(event)
            elif isinstance(event, ToolCallOut):
                frames = enc.tool_call(event)
            elif isinstance(event, ReasoningText):
                frames = enc.reasoning(event)
            else:
                finished = event
                frames = enc.finish(event) if event.reason not in ("error", "timeout") else enc.error(failure(event))
            for frame in frames:
                yield sse_bytes(frame)
    finally:
        if finished is None:
            handle.cancel()


def whole(handle, prepared: Prepared, *, parser=None, is_disconnected=lambda: False,
          observer=NO_OBSERVER) -> dict:
    outputs: list = []  # StepOutputs, ReasoningTexts and ToolCallOuts, in order
    finished = None
    for event in _events(handle, prepared, parser, is_disconnected=is_disconnected, observer=observer):
        if isinstance(event, Finished):
            finished = event
        else:
            outputs.append(event)
    if finished is None:  # the client went away; nobody reads this
        return {}
    if finished.reason in ("error", "timeout"):
        raise failure(finished)
    return prepared.encoder.whole(outputs, finished)
