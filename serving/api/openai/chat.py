"""OpenAI chat completions: the request adapter and the stream encoder."""

from __future__ import annotations


from ...engine.request import Finished, StepOutput
from .. import reasoning
from ..constrain import json_constraint, one_constraint, tool_constraint
from ..dialect import Frame, Prepared, ServeContext
from ..errors import InvalidRequest
from ..images import ImageInputs
from ..options import check_model, generation_request, resolve_max_tokens
from ..prompting import template_call
from ..reasoning_filter import ReasoningText
from ..request_body import validate
from ..tool_prompt import render
from ..tools import ToolRequest, make_tool, tool_request
from . import common
from .schemas import ChatCompletionRequest, ChatMessage


def _template_call(call: dict) -> dict:
    fn = call.get("function") or {}
    return {**call, **template_call(call.get("id"), fn.get("name"), fn.get("arguments"))}


def _message(m: ChatMessage, media: ImageInputs, param: str) -> dict:
    out = {"role": m.role, "content": media.openai_content(m.content, role=m.role, param=f"{param}.content")}
    # Templates that know tool calls render them; the others ignore the keys.
    if m.tool_calls:
        out["tool_calls"] = [_template_call(c) for c in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name:
        out["name"] = m.name
    if m.reasoning_content:
        out["reasoning_content"] = m.reasoning_content
    return out


def tools_of(body: ChatCompletionRequest) -> ToolRequest:
    tools = [make_tool(t.function.name, t.function.description, t.function.parameters, param=f"tools.{i}.function")
             for i, t in enumerate(body.tools or [])]
    choice = body.tool_choice or "auto"
    named = None if isinstance(choice, str) else choice.function.name
    return tool_request(tools, choice="auto" if named else choice, named=named,
                        parallel=body.parallel_tool_calls is not False)


def format_constraint(body: ChatCompletionRequest, ctx: ServeContext):
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_constraint(None, ctx, param="response_format")
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidRequest("response_format json_schema needs json_schema.schema", param="response_format.json_schema")
    return json_constraint(fmt.json_schema.schema_, ctx, param="response_format.json_schema.schema")


def adapt(raw: dict, ctx: ServeContext) -> Prepared:
    body = validate(raw, ChatCompletionRequest)
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs: true", param="top_logprobs")
    check_model(body.model, ctx.served, ctx.config)
    thinking = reasoning.openai_request(body, effort=body.reasoning_effort, effort_param="reasoning_effort")
    tools = tools_of(body)
    constraint = one_constraint(tool_constraint(tools, ctx), format_constraint(body, ctx), param="response_format")
    media = ImageInputs(ctx)
    shown = render([_message(m, media, f"messages.{i}") for i, m in enumerate(body.messages)], tools, ctx,
                   template_kwargs=thinking.template_kwargs)
    tokens = media.prepare(shown.tokens)
    max_tokens = resolve_max_tokens(body.requested_max_tokens, prompt_len=len(tokens), served=ctx.served,
                                    config=ctx.config,
                                    param="max_completion_tokens" if body.max_completion_tokens else "max_tokens")
    setup, processor = reasoning.plan(thinking, ctx, tokens, max_tokens=max_tokens, constraint=constraint)
    request = media.attach(generation_request(
        tokens,
        max_tokens=max_tokens,
        sampling=common.sampling(body, ctx),
        config=ctx.config,
        stop=body.stop_list,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        logits_processor=processor,
    ))
    encoder = ChatEncoder(ctx, prompt_tokens=tokens, include_usage=body.include_usage,
                          logprobs=body.logprobs, return_token_ids=body.return_token_ids)
    return Prepared(request, encoder, body.stream, shown.tools, shown.warning, reasoning=setup)


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

    def reasoning(self, piece) -> list[Frame]:
        # vLLM's and DeepSeek's field: the reasoning streams beside the content, never in it.
        delta = {"reasoning_content": piece.text}
        return [self.env.chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])]

    def tool_call(self, call) -> list[Frame]:
        # The parser hands over whole calls, so name and arguments travel in one chunk.
        delta = {"tool_calls": [{"index": call.index, **common.tool_call(call)}]}
        return [self.env.chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])]

    def whole(self, outputs: list, fin: Finished) -> dict:
        thoughts = "".join(o.text for o in outputs if isinstance(o, ReasoningText))
        steps, calls = common.split([o for o in outputs if not isinstance(o, ReasoningText)])
        message = {"role": "assistant", "content": "".join(o.text for o in steps)}
        if thoughts:
            message["reasoning_content"] = thoughts
        if calls:
            message["tool_calls"] = [common.tool_call(c) for c in calls]
            message["content"] = message["content"] or None
        choice = {"index": 0, "message": message,
                  "logprobs": self._logprobs(steps), "finish_reason": common.finish_reason(fin),
                  **self._ids(token_ids=common.token_ids(steps))}
        return self.env.whole(choices=[choice], usage=common.usage(fin.usage),
                              **self._ids(prompt_token_ids=self.prompt_tokens))
