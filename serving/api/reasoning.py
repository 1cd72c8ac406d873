"""Request-level reasoning control, the same for every dialect once read.

What a client may ask, by dialect:
- chat completions and Responses: `chat_template_kwargs` (passed to the chat template),
  `enable_thinking` (shorthand for chat_template_kwargs.enable_thinking) and `reasoning_budget`
  (an extension: at most this many tokens inside reasoning); chat's `reasoning_effort` and
  Responses' `reasoning.effort`;
- Anthropic Messages: `thinking` {type: enabled, budget_tokens} | {type: disabled} (adaptive and
  between_tools mean enabled with no budget), and `output_config.effort`, which gives thinking
  without a budget_tokens the effort's share of max_tokens (xhigh and max: none beyond max_tokens).

An effort maps to the template switch and a budget that is a share of the request's output
limit, so the answer always keeps room: none turns thinking off; minimal 1/8, low 1/4,
medium 1/2, high 3/4 of max tokens; xhigh and max no budget beyond max tokens.

The budget is enforced by a logits processor (serving/constraints/reasoning_budget.py) that
forces the closing tag once it is spent; it is added only when the server has a reasoning
parser and the request needs it. A server without one (`--reasoning-parser none`, or `auto` on a
template that never thinks) still passes the template switch on, and a budget has nothing to
limit there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ..engine.request import LogitsProcessorFactory
from .errors import InvalidRequest
from .reasoning_filter import ReasoningSetup

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
EFFORT_SHARE: dict[str, float | None] = {"minimal": 0.125, "low": 0.25, "medium": 0.5, "high": 0.75,
                                         "xhigh": None, "max": None}

# apply_chat_template's own arguments, which the server sets itself.
RESERVED_TEMPLATE_KEYS = frozenset({
    "conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
    "continue_final_message", "tokenize", "padding", "truncation", "max_length", "return_tensors",
    "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs",
})

# Prompt tokens read back to see whether the generation prompt opened reasoning.
PROMPT_TAIL_TOKENS = 32


class ReasoningFields(BaseModel):
    """The fields chat completions and Responses share (their bodies inherit these)."""

    model_config = ConfigDict(extra="ignore")

    chat_template_kwargs: dict[str, Any] | None = None
    enable_thinking: StrictBool | None = None
    reasoning_budget: StrictInt | None = Field(default=None, ge=0)


@dataclass(frozen=True)
class ReasoningRequest:
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    budget: int | None = None  # tokens
    share: float | None = None  # of max tokens, from an effort

    def budget_for(self, max_tokens: int) -> int | None:
        if self.budget is not None:
            return self.budget
        return None if self.share is None else int(max_tokens * self.share)


def _switch(sources: list[tuple[str, Any, bool | None]]) -> bool | None:
    """enable_thinking from its several spellings, (param, as sent, as a switch); spellings
    that disagree are a 400."""
    given = [(param, sent, value) for param, sent, value in sources if value is not None]
    if len({value for *_, value in given}) > 1:
        names = " and ".join(f"{param}={json.dumps(sent)}" for param, sent, _ in given)
        raise InvalidRequest(f"{names} disagree; send one", param=given[0][0])
    return given[0][2] if given else None


def template_kwargs(kwargs: dict[str, Any] | None, *, param: str = "chat_template_kwargs") -> dict[str, Any]:
    kwargs = dict(kwargs or {})
    reserved = sorted(RESERVED_TEMPLATE_KEYS & kwargs.keys())
    if reserved:
        raise InvalidRequest(f"{param}.{reserved[0]} is set by the server and cannot be overridden",
                             param=f"{param}.{reserved[0]}")
    if "enable_thinking" in kwargs and not isinstance(kwargs["enable_thinking"], bool):
        raise InvalidRequest(f"{param}.enable_thinking must be a boolean", param=f"{param}.enable_thinking")
    return kwargs


def openai_request(body: ReasoningFields, *, effort: str | None, effort_param: str) -> ReasoningRequest:
    kwargs = template_kwargs(body.chat_template_kwargs)
    switch = _switch([("chat_template_kwargs.enable_thinking", kwargs.get("enable_thinking"),
                       kwargs.get("enable_thinking")),
                      ("enable_thinking", body.enable_thinking, body.enable_thinking),
                      (effort_param, effort, None if effort is None else effort != "none")])
    if switch is not None:
        kwargs["enable_thinking"] = switch
    share = EFFORT_SHARE.get(effort) if effort else None
    return ReasoningRequest(kwargs, body.reasoning_budget, share)


def anthropic_template_kwargs(thinking) -> dict[str, Any]:
    """What Anthropic's `thinking` asks of the template (count_tokens renders the same)."""
    return {} if thinking is None else {"enable_thinking": thinking.type != "disabled"}


def anthropic_request(thinking, *, max_tokens: int, effort: str | None = None) -> ReasoningRequest:
    """`thinking` is the typed Anthropic config (schemas.ThinkingConfig) or None. Anthropic wants a
    budget of at least 1024; this server takes any budget below max_tokens, as small local
    models answer in a few hundred tokens."""
    budget = getattr(thinking, "budget_tokens", None)
    if budget is not None and budget >= max_tokens:
        raise InvalidRequest(f"max_tokens must be greater than thinking.budget_tokens ({max_tokens} <= {budget})",
                             param="thinking.budget_tokens")
    disabled = thinking is not None and thinking.type == "disabled"
    share = EFFORT_SHARE.get(effort) if effort and budget is None and not disabled else None
    return ReasoningRequest(anthropic_template_kwargs(thinking), budget, share)


def plan(request: ReasoningRequest, ctx, prompt_tokens: list[int], *, max_tokens: int,
         constraint: LogitsProcessorFactory | None) -> tuple[ReasoningSetup | None, LogitsProcessorFactory | None]:
    """This request's reasoning setup (None: no parser, the text is all answer) and the logits
    processor factory to give the engine: the constraint, or the budget wrapped around it."""
    parser = ctx.reasoning_parser
    if parser is None:
        return None, constraint
    inside = parser.opens_reasoning(ctx.tokenizer.decode(list(prompt_tokens[-PROMPT_TAIL_TOKENS:])))
    setup = ReasoningSetup(parser, inside)
    budget = request.budget_for(max_tokens)
    if budget is not None and budget >= max_tokens:
        budget = None  # the output limit ends reasoning first
    if budget is None and not (inside and constraint is not None):
        return setup, constraint
    from ..constraints.reasoning_budget import ReasoningBudget  # mlx: loaded by the engine anyway

    end_ids = list(ctx.tokenizer.encode(parser.end, add_special_tokens=False))
    return setup, ReasoningBudget(parser, ctx.token_text, budget=budget, end_ids=end_ids, inside=inside,
                                  then=constraint)
