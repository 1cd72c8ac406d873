"""OpenAI chat completions: the request adapter and the stream encoder."""

from __future__ import annotations

from ...engine.request import Finished, StepOutput
from ..dialect import Frame, Prepared, ServeContext
from ..errors import InvalidRequest, UnsupportedField
from ..options import check_model, generation_request, resolve_max_tokens, sampling_params, token_bias
from ..prompting import chat_tokens
from ..request_body import validate
from . import common
from .schemas import ChatCompletionRequest, ChatMessage


def _message(m: ChatMessage) -> dict:
    try:
        out = {"role": m.role, "content": m.text()}
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="messages") from None
    # Templates that know tool calls render them; the others ignore the keys.
    if m.tool_calls:
        out["tool_calls"] = m.tool_calls
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name:
        out["name"] = m.name
    return out


def refuse_unsupported(body: ChatCompletionRequest) -> None:
    """Fields that would change what the answer means are refused, never ignored."""
    fmt = (body.response_format or {}).get("type", "text")
    if fmt != "text":
        raise UnsupportedField(f"response_format type {fmt!r} is not supported yet; only 'text' is",
                               param="response_format")
    choice = body.tool_choice
    if choice is not None and choice not in ("auto", "none"):
        raise UnsupportedField("tool_choice 'required' or a named function is not supported yet; "
                               "use 'auto' or 'none'", param="tool_choice")
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs: true", param="top_logprobs")


def adapt(raw: dict, ctx: ServeContext) -> Prepared:
    body = validate(raw, ChatCompletionRequest)
    refuse_unsupported(body)
    check_model(body.model, ctx.served, ctx.config)
    tokens = chat_tokens([_message(m) for m in body.messages], ctx.tokenizer)
    request = generation_request(
        tokens,
        max_tokens=resolve_max_tokens(body.requested_max_tokens, prompt_len=len(tokens), served=ctx.served,
                                      config=ctx.config,
                                      param="max_completion_tokens" if body.max_completion_tokens else "max_tokens"),
        sampling=sampling_params(
            ctx.config, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
            seed=body.seed, frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty,
            repetition_penalty=body.repetition_penalty,
            logit_bias=token_bias(body.logit_bias, vocab_size=ctx.served.vocab_size)),
        config=ctx.config,
        stop=body.stop_list,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
    )
    encoder = ChatEncoder(ctx, prompt_tokens=tokens, include_usage=body.include_usage,
                          logprobs=body.logprobs, return_token_ids=body.return_token_ids)
    return Prepared(request, encoder, body.stream)


class ChatEncoder(common.BaseEncoder):
    def __init__(self, ctx: ServeContext, **options) -> None:
        super().__init__(ctx, common.Envelope(model_id=ctx.served.model_id, id_prefix="chatcmpl",
                                              object_whole="chat.completion", object_chunk="chat.completion.chunk"),
                         **options)

    def _logprobs(self, outputs: list[StepOutput]) -> dict | None:
        if not self.logprobs:
            return None
        return {"content": [common.chat_logprob(lp, self.ctx) for lp in common.logprob_entries(outputs)],
                "refusal": None}

    def head(self) -> list[Frame]:
        # Sent at once so headers go out before a slow prefill (waitress only
        # flushes headers with the first non-empty chunk).
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return [self.env.chunk([choice], **self._ids(prompt_token_ids=self.prompt_tokens))]

    def step(self, out: StepOutput) -> list[Frame]:
        if not self._worth_a_chunk(out):
            return []
        choice = {"index": 0, "delta": {"content": out.text}, "logprobs": self._logprobs([out]),
                  "finish_reason": None, **self._ids(token_ids=list(out.token_ids))}
        return [self.env.chunk([choice])]

    def _finish_choice(self, reason: str) -> dict:
        return {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}

    def whole(self, outputs: list[StepOutput], fin: Finished) -> dict:
        choice = {"index": 0, "message": {"role": "assistant", "content": "".join(o.text for o in outputs)},
                  "logprobs": self._logprobs(outputs), "finish_reason": common.finish_reason(fin),
                  **self._ids(token_ids=common.token_ids(outputs))}
        return self.env.whole(choices=[choice], usage=common.usage(fin.usage),
                              **self._ids(prompt_token_ids=self.prompt_tokens))
