"""The Falcon edge of telemetry: open a record per request, close it when the response ends,
and serve the registry at GET /metrics.

Falcon runs `process_response` before a streamed body is consumed, so for a stream
the record is closed by a wrapper around the body's iterator: when it is exhausted,
when it raises, or when the WSGI server closes it (a client that hung up).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import build_registry
from .observer import RequestRecord


class Telemetry:
    """Middleware; put it first so it sees every request, auth failures included.

    `known_routes`: paths that count as their own route label even when a request
    is refused before routing (a 401 on /v1/chat/completions); any other unrouted
    path is labelled "unmatched", so scanners cannot grow the label set.
    """

    def __init__(self, engine, *, access_log: bool = True, known_routes=()) -> None:
        self.registry, self.metrics = build_registry(engine)
        self.access_log = access_log
        self.known_routes = frozenset(known_routes)

    def process_request(self, req, resp) -> None:
        req.context.observer = RequestRecord(
            self.metrics, method=req.method, path=req.path, user_agent=req.user_agent,
            request_id=req.get_header("X-Request-Id"), log=self.access_log)

    def process_resource(self, req, resp, resource, params) -> None:
        record = req.context.observer
        if req.uri_template:
            record.route = req.uri_template
        dialect = getattr(resource, "dialect", None)  # generation resources serve one dialect
        if dialect is not None:
            record.dialect = getattr(dialect, "name", None)

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        record = getattr(req.context, "observer", None)
        if not isinstance(record, RequestRecord):
            return
        if req.uri_template:
            record.route = req.uri_template
        elif req.path in self.known_routes:
            record.route = req.path
        err = getattr(req.context, "api_error", None)
        if err is not None:
            record.failed(err.code or err.type, err.param)
        status = resp.status_code
        # (A file-like body, or any body of a HEAD, is not iterated by us: count it now.)
        if resp.stream is not None and not hasattr(resp.stream, "read") and req.method != "HEAD":
            resp.stream = ClosingStream(resp.stream, lambda broken: record.close(status, broken=broken))
        else:
            record.close(status)


class ClosingStream:
    """Iterate `inner`; call `on_close(broken)` once, when it ends, fails or is closed."""

    def __init__(self, inner, on_close) -> None:
        self._inner = inner
        self._items = iter(inner)
        self._on_close = on_close
        self._done = False

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._items)
        except StopIteration:
            self._finish(broken=False)
            raise
        except BaseException:
            self._finish(broken=True)
            raise

    def close(self) -> None:
        self._finish(broken=False)

    def _finish(self, *, broken: bool) -> None:
        if self._done:
            return
        self._done = True
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()  # a generation stream cancels its engine work here
        finally:
            self._on_close(broken)


class MetricsResource:
    """GET /metrics: this app's registry in Prometheus' text format."""

    def __init__(self, registry) -> None:
        self.registry = registry

    def on_get(self, req, resp) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self.registry)
