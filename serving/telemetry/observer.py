"""What one request did, gathered as it is served and written out once when it ends.

The API layer reports through three hooks: `requested` (the body's model and
stream flag; nothing else is read from the body), `prepared` (prompt
size, response id) and `event` (every engine event: token timing, usage, finish).
The edge closes the record with the HTTP status: at once for a whole response,
at the end of the body for a stream.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

from ..engine.request import Finished, StepOutput
from .access_log import bounded, clean_request_id, write
from .metrics import Metrics


class NullObserver:
    """For callers outside an app with telemetry (unit tests of respond, tools)."""

    def requested(self, body: dict) -> None: ...
    def prepared(self, prepared) -> None: ...
    def event(self, event) -> None: ...


NO_OBSERVER = NullObserver()


def observer_of(req):
    return getattr(req.context, "observer", None) or NO_OBSERVER


def _response_id(encoder) -> str | None:
    """Every dialect's encoder names its response (chatcmpl-…, msg_…, resp_…)."""
    rid = getattr(encoder, "id", None) or getattr(getattr(encoder, "env", None), "id", None)
    return rid if isinstance(rid, str) else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class RequestRecord:
    def __init__(self, metrics: Metrics, *, method: str, path: str, user_agent: str | None,
                 request_id: str | None, log: bool) -> None:
        self.metrics = metrics
        self.log = log
        self.arrived = datetime.now(timezone.utc)
        self.started = time.monotonic()
        self.method = method
        self.path = bounded(path)
        self.user_agent = bounded(user_agent)
        self.request_id = clean_request_id(request_id)
        self.route = "unmatched"
        self.dialect: str | None = None
        self.model: str | None = None
        self.stream: bool | None = None
        self.prompt_tokens: int | None = None
        self.response_id: str | None = None
        self.finish: Finished | None = None
        self.error: str | None = None
        self.error_param: str | None = None
        self.ttft_s: float | None = None
        self.tokens_seen = 0
        self._last_token: float | None = None
        self._closed = False
        self._lock = threading.Lock()
        metrics.in_flight.inc()

    # ---- API-layer hooks ------------------------------------------------------
    def requested(self, body: dict) -> None:
        model = body.get("model")
        self.model = bounded(model) if isinstance(model, str) else None
        self.stream = bool(body.get("stream"))

    def prepared(self, prepared) -> None:
        self.prompt_tokens = len(prepared.request.prompt_tokens)
        self.stream = bool(prepared.stream)
        self.response_id = _response_id(prepared.encoder)

    def event(self, event) -> None:
        if isinstance(event, StepOutput):
            if event.token_ids:
                self._tokens(len(event.token_ids))
        elif isinstance(event, Finished):
            self.finish = event  # a later one (the tool-call filter's) replaces the engine's

    def _tokens(self, n: int) -> None:
        now = time.monotonic()
        if self._last_token is None:
            self.ttft_s = now - self.started
            self.metrics.ttft.labels(self.route).observe(self.ttft_s)
        else:
            gap = (now - self._last_token) / n
            for _ in range(n):
                self.metrics.itl.labels(self.route).observe(gap)
        self._last_token = now
        self.tokens_seen += n

    # ---- edge hooks -----------------------------------------------------------
    def failed(self, code: str | None, param: str | None) -> None:
        self.error, self.error_param = code, param

    def close(self, status: int, *, broken: bool = False) -> None:
        """Once per request: count it, and write its access-log line. `broken`: the
        stream's body raised after its headers went out."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        total_s = time.monotonic() - self.started
        m = self.metrics
        m.in_flight.dec()
        m.requests.labels(self.route, self.method, str(status)).inc()
        m.duration.labels(self.route, self.method).observe(total_s)
        reason, usage = self._outcome(status, broken)
        if reason is not None:
            m.finishes.labels(self.route, reason).inc()
            for kind, count in zip(("prompt", "cached", "completion"), usage):
                if count:
                    m.tokens.labels(self.route, kind).inc(count)
        if self.log:
            write(self._fields(status, total_s, reason, usage))

    def _outcome(self, status: int, broken: bool):
        """(finish reason, (prompt, cached, completion) tokens) of a generation that ran;
        (None, ...) for a request that never reached the engine."""
        if self.finish is not None:
            u = self.finish.usage
            return ("error" if broken else self.finish.reason), (u.prompt_tokens, u.cached_tokens,
                                                                  u.completion_tokens)
        if self.prompt_tokens is None or status >= 400:
            return None, (self.prompt_tokens, None, None)
        # Submitted and then abandoned: the client hung up before the engine finished.
        return ("error" if broken else "cancelled"), (self.prompt_tokens, None, self.tokens_seen)

    def _fields(self, status: int, total_s: float, reason, usage) -> dict:
        prompt, cached, completion = usage
        return {
            "time": self.arrived.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "status": status,
            "dialect": self.dialect,
            "stream": self.stream,
            "model": self.model,
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "completion_tokens": completion,
            "finish_reason": reason,
            "ttft_ms": _ms(self.ttft_s),
            "total_ms": _ms(total_s),
            "error": self.error,
            "error_param": self.error_param,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "response_id": self.response_id,
        }
