"""The Responses request adapter: typed body, conversation (with stored history) and prompt."""

from __future__ import annotations

from ...engine.request import SamplingParams
from ..dialect import Prepared, ServeContext
from ..errors import InvalidRequest, UnsupportedField
from ..images import ImageInputs
from ..options import check_model, generation_request, resolve_max_tokens, sampling_params
from .. import reasoning
from ..constrain import json_constraint, one_constraint, tool_constraint
from ..tool_prompt import render
from ..tools import ToolRequest, make_tool, tool_request
from ..request_body import validate
from . import items
from .encoder import ResponsesEncoder
from .schemas import ReasoningOptions, ResponsesRequest
from .store import ResponseStore


def tools_of(body: ResponsesRequest) -> ToolRequest:
    """Function tools reach the model; hosted ones (web_search, namespaces, custom) cannot run
    here, so the model never sees them (they are still echoed back)."""
    tools = [make_tool(t.get("name"), t.get("description"), t.get("parameters"), param=f"tools.{i}")
             for i, t in enumerate(body.tools or []) if t.get("type") == "function"]
    choice = body.tool_choice or "auto"
    named = None if isinstance(choice, str) else choice.name
    return tool_request(tools, choice="auto" if named else choice, named=named,
                        parallel=body.parallel_tool_calls is not False)


def format_constraint(body: ResponsesRequest, ctx: ServeContext):
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_constraint(None, ctx, param="text.format")
    if fmt.schema_ is None:
        raise InvalidRequest("text.format json_schema needs a schema", param="text.format.schema")
    return json_constraint(fmt.schema_, ctx, param="text.format.schema")


def refuse_unsupported(body: ResponsesRequest) -> None:
    """Fields that would change what the answer means are refused, never ignored."""
    if body.top_logprobs or "message.output_text.logprobs" in (body.include or ()):
        raise UnsupportedField("logprobs are not supported on /v1/responses yet",
                               param="top_logprobs" if body.top_logprobs else "include")
    for name in ("background", "conversation", "prompt"):
        if getattr(body, name):
            raise UnsupportedField(f"{name} is not supported by this server; omit it", param=name)


def echo_fields(body: ResponsesRequest, sampling: SamplingParams) -> dict:
    """The request settings a Response object repeats back, with the sampling actually used."""
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "tools": body.tools or [],
        "tool_choice": (body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump")
                        else body.tool_choice or "auto"),
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "text": {"format": body.text.format.model_dump(by_alias=True, exclude_none=True)
                 if body.text and body.text.format else {"type": "text"}},
        "reasoning": (body.reasoning or ReasoningOptions()).model_dump(),
        "metadata": body.metadata or {},
        "previous_response_id": body.previous_response_id,
        "prompt_cache_key": body.prompt_cache_key,
        "truncation": "disabled",
    }


class Responses:
    """Adapts Responses bodies; holds the store that `previous_response_id` reads.

    With no store (the route table's default) nothing is kept and every
    `previous_response_id` is unknown; `create_app` gives each app its own.
    Function tools are shown to the model and its calls come back as
    function_call output items.
    """

    def __init__(self, store: ResponseStore | None = None) -> None:
        self.store = store

    def history(self, previous_id: str | None) -> list:
        if previous_id is None:
            return []
        stored = self.store.get(previous_id) if self.store is not None else None
        if stored is None:
            raise InvalidRequest(f"previous response {previous_id!r} is not known here: it was never stored "
                                 "(store: false), or it is too old, or the server restarted",
                                 param="previous_response_id", code="previous_response_not_found")
        return stored

    def adapt(self, raw: dict, ctx: ServeContext) -> Prepared:
        body = validate(raw, ResponsesRequest)
        refuse_unsupported(body)
        check_model(body.model, ctx.served, ctx.config)
        history = self.history(body.previous_response_id)
        conversation = [*history, *body.input]
        media = ImageInputs(ctx)
        messages = items.messages(conversation, instructions=body.instructions, media=media,
                                  first_index=-len(history))
        if len(messages) == (1 if body.instructions else 0):
            raise InvalidRequest("input is empty: send a string or at least one message", param="input")
        thinking = reasoning.openai_request(body, effort=body.reasoning.effort if body.reasoning else None,
                                            effort_param="reasoning.effort")
        tools = tools_of(body)
        constraint = one_constraint(tool_constraint(tools, ctx), format_constraint(body, ctx), param="text.format")
        shown = render(messages, tools, ctx, param="input", template_kwargs=thinking.template_kwargs)
        tokens = media.prepare(shown.tokens, param="input")
        sampling = sampling_params(ctx.config, temperature=body.temperature, top_p=body.top_p)
        max_tokens = resolve_max_tokens(body.max_output_tokens, prompt_len=len(tokens), served=ctx.served,
                                        config=ctx.config, param="max_output_tokens", prompt_param="input")
        setup, processor = reasoning.plan(thinking, ctx, tokens, max_tokens=max_tokens, constraint=constraint)
        request = media.attach(generation_request(tokens, max_tokens=max_tokens, sampling=sampling,
                                                  config=ctx.config, prompt_param="input",
                                                  logits_processor=processor))
        encoder = ResponsesEncoder(model_id=ctx.served.model_id, echo=echo_fields(body, sampling),
                                   conversation=conversation, store=self.store if body.store else None)
        return Prepared(request, encoder, body.stream, shown.tools, shown.warning, reasoning=setup)
