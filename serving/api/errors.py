"""One error hierarchy for every API dialect, and the OpenAI renderer.

Resources raise APIError subclasses; the edge turns them (and Falcon's own
HTTP errors, and anything unexpected) into the dialect's error body.
"""

from __future__ import annotations

import json
import logging

import falcon

log = logging.getLogger("mlx_proof.api")


class APIError(Exception):
    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(APIError):
    pass


class AuthenticationFailed(APIError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RouteNotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(APIError):
    status = 413
    code = "payload_too_large"


class ContextLengthExceeded(APIError):
    code = "context_length_exceeded"


class EngineFailure(APIError):
    status = 500
    type = "server_error"
    code = "engine_error"


def openai_error_body(err: APIError) -> dict:
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def _render(resp: falcon.Response, err: APIError) -> None:
    resp.status = falcon.code_to_http_status(err.status)
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(openai_error_body(err))


def install_error_handlers(app: falcon.App) -> None:
    """Every error leaves in OpenAI's shape, whatever raised it."""

    def on_api_error(req, resp, ex: APIError, params):
        _render(resp, ex)

    def on_http_error(req, resp, ex: falcon.HTTPError, params):
        err = APIError(ex.description or ex.title or "request failed", code=None)
        err.status = ex.status_code
        err.type = "invalid_request_error" if ex.status_code < 500 else "server_error"
        _render(resp, err)

    def on_unexpected(req, resp, ex: Exception, params):
        log.exception("unhandled error on %s %s", req.method, req.path)
        _render(resp, EngineFailure(f"internal error: {type(ex).__name__}"))

    app.add_error_handler(Exception, on_unexpected)
    app.add_error_handler(falcon.HTTPError, on_http_error)
    app.add_error_handler(APIError, on_api_error)
