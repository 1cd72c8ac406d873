"""One error hierarchy for every API dialect, rendered at the edge by the dialect's renderer.

Resources raise APIError subclasses; the edge turns them (and Falcon's own
HTTP errors, and anything unexpected) into the body of the dialect that owns
the request's path, so an auth failure on an Anthropic route is Anthropic-shaped.
"""

from __future__ import annotations

import json
import logging
from typing import Callable

import falcon

log = logging.getLogger("mlx_proof.api")


class APIError(Exception):
    """`type` is OpenAI's spelling; other dialects map from the status."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code = code


class InvalidRequest(APIError):
    pass


class UnsupportedField(APIError):
    """A field that would change what the output means, which this server cannot honour yet."""

    code = "unsupported_field"


class AuthenticationFailed(APIError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(APIError):
    status = 404
    code = "model_not_found"


class RouteNotFound(APIError):
    status = 404
    code = "not_found"


class MethodNotAllowed(APIError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(APIError):
    status = 413
    code = "payload_too_large"


class ContextLengthExceeded(APIError):
    code = "context_length_exceeded"


class RateLimited(APIError):
    status = 429
    type = "rate_limit_exceeded"
    code = "server_busy"


class EngineFailure(APIError):
    status = 500
    type = "server_error"
    code = "engine_error"


class EngineUnavailable(APIError):
    status = 503
    type = "server_error"
    code = "engine_unavailable"


class GenerationTimeout(APIError):
    status = 504
    type = "server_error"
    code = "timeout"


ErrorRenderer = Callable[[APIError], dict]


def _from_http_error(ex: falcon.HTTPError) -> APIError:
    classes = {404: RouteNotFound, 405: MethodNotAllowed, 413: PayloadTooLarge}
    cls = classes.get(ex.status_code, APIError)
    err = cls(ex.description or ex.title or "request failed")
    if cls is APIError:
        err.status = ex.status_code
        err.type = "invalid_request_error" if ex.status_code < 500 else "server_error"
    return err


RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})


def install_error_handlers(app: falcon.App, renderer_for_request: Callable[[falcon.Request], ErrorRenderer]) -> None:
    """Every error leaves in the shape of the dialect that owns the request."""

    def render(req, resp, err: APIError) -> None:
        req.context.api_error = err  # the access log names its code and param
        resp.status = falcon.code_to_http_status(err.status)
        resp.content_type = falcon.MEDIA_JSON
        # Both official SDKs obey x-should-retry before their own status rules; without it they
        # retry a 401 up to 10 times (Claude Code: about 3 minutes before a bad key shows).
        resp.set_header("x-should-retry", "true" if err.status in RETRYABLE else "false")
        for name, value in err.headers.items():
            resp.set_header(name, value)
        resp.text = json.dumps(renderer_for_request(req)(err))

    def on_api_error(req, resp, ex: APIError, params):
        render(req, resp, ex)

    def on_http_error(req, resp, ex: falcon.HTTPError, params):
        render(req, resp, _from_http_error(ex))

    def on_unexpected(req, resp, ex: Exception, params):
        log.exception("unhandled error on %s %s", req.method, req.path)
        render(req, resp, EngineFailure(f"internal error: {type(ex).__name__}"))

    app.add_error_handler(Exception, on_unexpected)
    app.add_error_handler(falcon.HTTPError, on_http_error)
    app.add_error_handler(APIError, on_api_error)
