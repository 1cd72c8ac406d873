"""The Anthropic dialect: POST /v1/messages and /v1/messages/count_tokens."""

from __future__ import annotations

from ..dialect import Dialect, ServeContext
from ..images import ImageInputs
from ..options import check_model
from ..request_body import read_json, validate
from . import messages
from .messages import error_body
from .prompt import prompt
from .schemas import PromptFields

MESSAGES = Dialect("anthropic-messages", messages.adapt, error_body)


class CountTokens:
    """The prompt's length in tokens, built exactly as /v1/messages builds it: usage.input_tokens to come."""

    def __init__(self, ctx: ServeContext) -> None:
        self.ctx = ctx

    def on_post(self, req, resp):
        body = validate(read_json(req, max_bytes=self.ctx.config.max_body_bytes), PromptFields)
        check_model(body.model, self.ctx.served, self.ctx.config)
        media = ImageInputs(self.ctx)
        resp.media = {"input_tokens": len(media.prepare(prompt(body, self.ctx, media=media).tokens))}
