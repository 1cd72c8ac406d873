"""Falcon resources: one generic generation resource per dialect route, plus models, health and root."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timezone

import falcon

from ..config import ServerConfig
from ..telemetry import observer_of
from . import respond
from .dialect import Dialect, ServeContext, ServedModel
from .errors import ModelNotFound, RouteNotFound
from .request_body import read_json


class Generate:
    """POST a body in `dialect`'s shape; answer in the same dialect, streamed or whole."""

    def __init__(self, dialect: Dialect, engine, ctx: ServeContext, *, idle_s: float | None = None) -> None:
        self.dialect = dialect
        self.engine = engine
        self.ctx = ctx
        self.idle_s = idle_s

    def on_post(self, req, resp):
        observer = observer_of(req)
        body = read_json(req, max_bytes=self.ctx.config.max_body_bytes)
        observer.requested(body)
        prepared = self.dialect.adapt(body, self.ctx)
        observer.prepared(prepared)
        handle = respond.submit(self.engine, prepared)
        if prepared.warning:
            resp.set_header("X-MLX-Proof-Warning", prepared.warning)
        probe = respond.disconnect_probe(req.env)
        if prepared.stream:
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            resp.stream = respond.stream(handle, prepared, parser=self.ctx.tool_parser, is_disconnected=probe,
                                         idle_s=self.idle_s, observer=observer)
        else:
            resp.media = respond.whole(handle, prepared, parser=self.ctx.tool_parser, is_disconnected=probe,
                                       observer=observer)


def _model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "mlx-proof"}


def speaks_anthropic(req) -> bool:
    """Anthropic's SDK and API clients send anthropic-version on every request."""
    return req.get_header("anthropic-version") is not None


def _anthropic_model(model_id: str, created: int) -> dict:
    return {"type": "model", "id": model_id, "display_name": model_id, "lifecycle": "active",
            "created_at": datetime.fromtimestamp(created, timezone.utc).isoformat().replace("+00:00", "Z")}


class Models:
    """The served model ids, in OpenAI's shape, or Anthropic's for a request that speaks it.

    `beside`: the ids of models served beside the chat model (embeddings, speech-to-text), listed after it."""

    def __init__(self, served: ServedModel, beside: tuple[str, ...] = ()) -> None:
        self.served = served
        self.ids = tuple(dict.fromkeys((*served.ids, *beside)))
        self.created = int(time.time())

    def on_get(self, req, resp):
        ids = list(self.ids)
        if speaks_anthropic(req):
            resp.media = {"data": [_anthropic_model(i, self.created) for i in ids], "has_more": False,
                          "first_id": ids[0], "last_id": ids[-1]}
            return
        resp.media = {"object": "list", "data": [_model_card(i, self.created) for i in ids]}

    def on_get_one(self, req, resp, model_id: str):
        if model_id not in self.ids:
            raise ModelNotFound(f"model {model_id!r} is not served here; available: {', '.join(self.ids)}",
                                param="model")
        card = _anthropic_model if speaks_anthropic(req) else _model_card
        resp.media = card(model_id, self.created)


class Root:
    """Clients probe `/` (Claude Code sends HEAD /) to see that a server is there."""

    def __init__(self, served: ServedModel) -> None:
        self.served = served

    def on_get(self, req, resp):
        resp.media = {"name": "mlx-proof", "model": self.served.model_id, "health": "/health"}

    def on_head(self, req, resp):
        resp.content_type = falcon.MEDIA_JSON


class NotFound:
    """A sink for every unrouted path: a 404 in the dialect's own error shape."""

    def __call__(self, req, resp, **kwargs):
        raise RouteNotFound(f"no route for {req.method} {req.path}")


def public_config(config: ServerConfig) -> dict:
    """The resolved settings, minus secrets and local paths, for evidence manifests."""
    hidden = {"api_key", "cache_dir", "access_log"}
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in hidden}


def embedding_health(service) -> dict:
    info = service.info
    return {"id": info.model_id, "dimensions": info.dimensions, "max_tokens": info.max_tokens,
            "weights_sha256": info.weights_sha256, "source": info.source, "worker": service.stats()}


class Health:
    def __init__(self, engine, served: ServedModel, backend: dict, config: ServerConfig, *,
                 embeddings=None) -> None:
        self.embeddings = embeddings  # serving.embeddings.EmbeddingService, when one is served
        self.engine = engine
        self.served = served
        self.backend = backend
        self.config = config
        self.started = time.time()

    def on_get(self, req, resp):
        stats = self.engine.stats()
        extra = {"embedding": embedding_health(self.embeddings)} if self.embeddings is not None else {}
        alive = stats["alive"] and (self.embeddings is None or self.embeddings.alive)
        resp.status = falcon.HTTP_200 if alive else falcon.HTTP_503
        resp.text = json.dumps({
            "status": "ok" if alive else "engine-down",
            "model": {"id": self.served.model_id, "aliases": list(self.served.aliases),
                      "context_length": self.served.context_length,
                      "weights_sha256": self.served.weights_sha256, "source": self.served.source},
            "backend": self.backend,
            "engine": stats,
            "profile": self.config.profile,
            "config": public_config(self.config),
            "uptime_s": round(time.time() - self.started, 1),
            **extra,
        })
        resp.content_type = falcon.MEDIA_JSON
