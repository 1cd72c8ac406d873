"""Pieces of OpenAI's wire format shared by chat and legacy completions."""

from __future__ import annotations

import time
import uuid

from ...engine.request import Finished, SamplingParams, StepOutput, TokenLogprob, Usage
from ..dialect import KEEPALIVE, Frame, ServeContext
from ..errors import APIError
from ..options import sampling_params, token_bias

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop",
                  "tool_calls": "tool_calls"}


def sampling(body, ctx: ServeContext) -> SamplingParams:
    """Chat and completions share OpenAI's sampling fields (schemas.SamplingFields)."""
    return sampling_params(
        ctx.config, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
        seed=body.seed, frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty,
        repetition_penalty=body.repetition_penalty,
        logit_bias=token_bias(body.logit_bias, vocab_size=ctx.served.vocab_size))


def error_body(err: APIError) -> dict:
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def usage(u: Usage) -> dict:
    out = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }
    if u.reasoning_tokens is not None:  # counted only where a reasoning parser read the output
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out


def finish_reason(fin: Finished) -> str:
    return FINISH_REASONS.get(fin.reason, "stop")


def split(outputs: list) -> tuple[list[StepOutput], list]:
    """A whole response's text steps and its parsed tool calls."""
    return [o for o in outputs if isinstance(o, StepOutput)], [o for o in outputs if not isinstance(o, StepOutput)]


def tool_call(call) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def token_ids(outputs: list[StepOutput]) -> list[int]:
    return [t for out in outputs for t in out.token_ids]


def logprob_entries(outputs: list[StepOutput]) -> list[TokenLogprob]:
    return [lp for out in outputs for lp in (out.logprobs or ())]


def chat_logprob(lp: TokenLogprob, ctx: ServeContext) -> dict:
    def one(token: int, value: float) -> dict:
        text = ctx.token_text(token)
        return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

    return {**one(lp.token, lp.logprob), "top_logprobs": [one(t, v) for t, v in lp.top]}


class Envelope:
    """The id, object names and timestamps one response's chunks share."""

    def __init__(self, *, model_id: str, id_prefix: str, object_whole: str, object_chunk: str) -> None:
        self.id = f"{id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_id = model_id
        self.object_whole = object_whole
        self.object_chunk = object_chunk

    def whole(self, **fields) -> dict:
        return {"id": self.id, "object": self.object_whole, "created": self.created, "model": self.model_id,
                **fields}

    def chunk(self, choices: list, **fields) -> Frame:
        return Frame({"id": self.id, "object": self.object_chunk, "created": self.created,
                      "model": self.model_id, "choices": choices, **fields})


DONE = Frame("[DONE]")


class BaseEncoder:
    """What chat and completions encoders share: ids, finish, usage and error frames."""

    def __init__(self, ctx: ServeContext, env: Envelope, *, prompt_tokens: list[int], include_usage: bool,
                 logprobs: bool, return_token_ids: bool) -> None:
        self.ctx = ctx
        self.env = env
        self.prompt_tokens = prompt_tokens
        self.include_usage = include_usage
        self.logprobs = logprobs
        self.return_token_ids = return_token_ids

    def _ids(self, **extra) -> dict:
        return extra if self.return_token_ids else {}

    def _worth_a_chunk(self, out: StepOutput) -> bool:
        return bool(out.text or (self.logprobs and out.logprobs) or (self.return_token_ids and out.token_ids))

    def _finish_choice(self, reason: str) -> dict:
        raise NotImplementedError

    def finish(self, fin: Finished) -> list[Frame]:
        frames = [self.env.chunk([self._finish_choice(finish_reason(fin))])]
        if self.include_usage:
            frames.append(self.env.chunk([], usage=usage(fin.usage)))
        return [*frames, DONE]

    def error(self, err: APIError) -> list[Frame]:
        return [Frame(error_body(err))]

    def idle(self) -> list[Frame]:
        return [KEEPALIVE]

    def tool_call(self, call) -> list[Frame]:
        return []  # legacy completions take no tools

    def reasoning(self, piece) -> list[Frame]:
        return []  # legacy completions have no reasoning parser (no chat template)
