"""Anthropic Messages: the request adapter, the stream encoder and the error shape.

Usage: `input_tokens` is the whole prompt, cached part included, and
`cache_read_input_tokens` is the part our prefix cache served. Anthropic's own
input_tokens leaves cache reads out; we count them in so that count_tokens
always equals input_tokens for the same body, whatever happens to be cached.
Nothing is ever billed for writing the cache, so cache_creation_input_tokens is 0.
"""

from __future__ import annotations

import uuid

from ...engine.request import Finished, StepOutput, Usage
from ..dialect import Frame, Prepared, ServeContext
from ..constrain import json_constraint, one_constraint, tool_constraint
from ..errors import APIError
from ..images import ImageInputs
from .. import reasoning
from ..options import check_model, generation_request, resolve_max_tokens, sampling_params
from ..reasoning_filter import ReasoningText
from ..request_body import validate
from .blocks import ContentBlocks
from .prompt import prompt, tools_of
from .schemas import MessagesRequest

# Anthropic names errors by kind; ours carry OpenAI's names, so map from the status.
# 503 is Anthropic's 529 "overloaded"; the status stays ours.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 503: "overloaded_error", 504: "api_error"}

STOP_REASONS = {"eos": "end_turn", "stop": "stop_sequence", "length": "max_tokens", "cancelled": "end_turn",
                "tool_calls": "tool_use"}

PING = Frame({"type": "ping"}, "ping")


def error_body(err: APIError) -> dict:
    kind = ERROR_TYPES.get(err.status, "invalid_request_error" if err.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def format_constraint(body: MessagesRequest, ctx: ServeContext):
    fmt = body.output_format or (body.output_config.format if body.output_config else None)
    if fmt is None:
        return None
    param = "output_format" if body.output_format else "output_config.format"
    return json_constraint(fmt.schema_, ctx, param=f"{param}.schema")


def adapt(raw: dict, ctx: ServeContext) -> Prepared:
    body = validate(raw, MessagesRequest)
    check_model(body.model, ctx.served, ctx.config)
    thinking = reasoning.anthropic_request(body.thinking, max_tokens=body.max_tokens,
                                           effort=body.output_config.effort if body.output_config else None)
    tools = tools_of(body)
    constraint = one_constraint(tool_constraint(tools, ctx), format_constraint(body, ctx), param="output_config")
    media = ImageInputs(ctx)
    shown = prompt(body, ctx, tools, media)
    tokens = media.prepare(shown.tokens)
    max_tokens = resolve_max_tokens(body.max_tokens, prompt_len=len(tokens), served=ctx.served, config=ctx.config)
    setup, processor = reasoning.plan(thinking, ctx, tokens, max_tokens=max_tokens, constraint=constraint)
    request = media.attach(generation_request(
        tokens,
        max_tokens=max_tokens,
        sampling=sampling_params(ctx.config, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k),
        config=ctx.config,
        stop=tuple(body.stop_sequences or ()),
        logits_processor=processor,
    ))
    omit = body.thinking is not None and getattr(body.thinking, "display", None) == "omitted"
    encoder = MessageEncoder(ctx, prompt_len=len(tokens), omit_thinking=omit)
    return Prepared(request, encoder, body.stream, shown.tools, shown.warning, reasoning=setup)


def usage(u: Usage) -> dict:
    out = {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
           "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0}
    if u.reasoning_tokens is not None:  # counted only where a reasoning parser read the output
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return out


class MessageEncoder:
    def __init__(self, ctx: ServeContext, *, prompt_len: int, omit_thinking: bool = False) -> None:
        self.id = f"msg_{uuid.uuid4().hex}"
        self.model = ctx.served.model_id
        self.prompt_len = prompt_len
        self.blocks = ContentBlocks()
        self.omit_thinking = omit_thinking  # thinking.display "omitted": the blocks come, empty

    def _message(self, content: list[dict], fin: Finished | None, u: Usage) -> dict:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": STOP_REASONS.get(fin.reason, "end_turn") if fin else None,
                "stop_sequence": fin.stop_string if fin else None, "usage": usage(u)}

    def head(self) -> list[Frame]:
        # The prompt length is known now; how much of it the cache held is not, so
        # message_start says 0 and message_delta carries the final counts.
        start = self._message([], None, Usage(self.prompt_len, 0))
        return [Frame({"type": "message_start", "message": start}, "message_start"), PING]

    def step(self, out: StepOutput) -> list[Frame]:
        return self.blocks.add("text", out.text) if out.text else []

    def reasoning(self, piece) -> list[Frame]:
        if not piece.text:
            return []
        return self.blocks.add("thinking", "" if self.omit_thinking else piece.text)

    def tool_call(self, call) -> list[Frame]:
        return self.blocks.add("tool_use", call.arguments, id=call.id, name=call.name)

    def finish(self, fin: Finished) -> list[Frame]:
        final = self._message([], fin, fin.usage)
        return [*self.blocks.close(),
                Frame({"type": "message_delta", "usage": final["usage"],
                       "delta": {"stop_reason": final["stop_reason"], "stop_sequence": final["stop_sequence"]}},
                      "message_delta"),
                Frame({"type": "message_stop"}, "message_stop")]

    def error(self, err: APIError) -> list[Frame]:
        return [Frame(error_body(err), "error")]

    def idle(self) -> list[Frame]:
        return [PING]  # keeps clients and proxies from timing out through a long prefill

    def whole(self, outputs: list, fin: Finished) -> dict:
        for out in outputs:
            if isinstance(out, StepOutput):
                self.step(out)
            elif isinstance(out, ReasoningText):
                self.reasoning(out)
            else:
                self.tool_call(out)
        self.blocks.close()
        return self._message(self.blocks.content, fin, fin.usage)
