"""Falcon resources for the OpenAI dialect, plus /health."""

from __future__ import annotations

import dataclasses
import json
import time

import falcon

from ..config import ServerConfig
from .generation import ServedModel, build_request
from .openai_shapes import ChatShape, CompletionShape
from .prompting import chat_prompt_tokens, completion_prompt
from .request_body import parse_body
from .schemas import ChatCompletionRequest, CompletionRequest
from .streaming import collect, disconnect_probe, stream_events


class _Generate:
    def __init__(self, engine, served: ServedModel, config: ServerConfig) -> None:
        self.engine = engine
        self.served = served
        self.config = config

    def _respond(self, req, resp, body, prompt_tokens: list[int], shape, *, prefix: str = "") -> None:
        request = build_request(body, prompt_tokens, served=self.served, config=self.config,
                                vocab_size=self.served.vocab_size)
        handle = self.engine.submit(request)
        probe = disconnect_probe(req.env)
        if body.stream:
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            resp.stream = stream_events(handle, shape, include_usage=body.include_usage,
                                        prefix=prefix, is_disconnected=probe)
        else:
            resp.media = collect(handle, shape, prefix=prefix, is_disconnected=probe)


class ChatCompletions(_Generate):
    def on_post(self, req, resp):
        body = parse_body(req, ChatCompletionRequest)
        tokens = chat_prompt_tokens(body, self.engine.tokenizer)
        self._respond(req, resp, body, tokens, ChatShape(self.served.model_id))


class Completions(_Generate):
    def on_post(self, req, resp):
        body = parse_body(req, CompletionRequest)
        tokens, text = completion_prompt(body, self.engine.tokenizer, vocab_size=self.served.vocab_size)
        self._respond(req, resp, body, tokens, CompletionShape(self.served.model_id),
                      prefix=text if body.echo else "")


class Models:
    def __init__(self, served: ServedModel) -> None:
        self.served = served
        self.created = int(time.time())

    def on_get(self, req, resp):
        resp.media = {
            "object": "list",
            "data": [{"id": i, "object": "model", "created": self.created, "owned_by": "mlx-proof"}
                     for i in self.served.ids],
        }


def public_config(config: ServerConfig) -> dict:
    """The resolved settings, minus secrets and local paths, for evidence manifests."""
    hidden = {"api_key", "cache_dir"}
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in hidden}


class Health:
    def __init__(self, engine, served: ServedModel, backend: dict, config: ServerConfig) -> None:
        self.engine = engine
        self.served = served
        self.backend = backend
        self.config = config
        self.started = time.time()

    def on_get(self, req, resp):
        stats = self.engine.stats()
        resp.status = falcon.HTTP_200 if stats["alive"] else falcon.HTTP_503
        resp.text = json.dumps({
            "status": "ok" if stats["alive"] else "engine-down",
            "model": {"id": self.served.model_id, "aliases": list(self.served.aliases),
                      "context_length": self.served.context_length,
                      "weights_sha256": self.served.weights_sha256, "source": self.served.source},
            "backend": self.backend,
            "engine": stats,
            "profile": self.config.profile,
            "config": public_config(self.config),
            "uptime_s": round(time.time() - self.started, 1),
        })
        resp.content_type = falcon.MEDIA_JSON
