"""Typed request bodies for the Anthropic Messages dialect.

Unknown top-level fields are ignored (Claude Code sends many we have no use
for); known fields are validated, so a wrong type or range is a 400 naming the
field. Content and `system` may be a string or a list of blocks; a string is
read as one text block, so the rest of the dialect sees only blocks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictInt, Tag, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # cache_control and friends ride along unread


def _as_blocks(value):
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if not isinstance(value, list):
        raise ValueError("must be a string or a list of content blocks")
    return value


class TextBlock(_Body):
    type: Literal["text"]
    text: str


class MediaBlock(_Body):
    """Images reach a vision model (api.images reads `source`); documents, and images on a text model,
    are refused by name."""

    type: Literal["image", "document"]
    source: dict[str, Any] | None = None


class ToolUseBlock(_Body):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Body):
    type: Literal["tool_result"]
    tool_use_id: str
    content: list[Annotated[Union[TextBlock, MediaBlock], Field(discriminator="type")]] = []
    is_error: bool = False

    _blocks = field_validator("content", mode="before")(_as_blocks)


class ThinkingBlock(_Body):
    type: Literal["thinking", "redacted_thinking"]


Block = Annotated[Union[TextBlock, MediaBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock],
                  Field(discriminator="type")]


class Message(_Body):
    # "system" is not in Anthropic's schema, but Claude Code sends it; it is folded into the system prompt.
    role: Literal["user", "assistant", "system"]
    content: list[Block]

    _blocks = field_validator("content", mode="before")(_as_blocks)


class ToolChoice(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ToolDef(_Body):
    # Hosted tools (web search, code execution...) carry a versioned type and run on
    # Anthropic's side; they cannot run here, so they never reach the model.
    type: str | None = None
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class OutputFormat(_Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    format: OutputFormat | None = None  # structured output, by constrained decoding
    # How much the model may spend; here, the thinking budget's share of max_tokens (api.reasoning).
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class ThinkingEnabled(_Body):
    type: Literal["enabled"]
    budget_tokens: StrictInt = Field(ge=0)  # Anthropic wants >= 1024; small local models need less
    display: Literal["summarized", "omitted"] | None = None


class ThinkingOther(_Body):
    """adaptive and between_tools: thinking on, the model decides how much (no budget)."""

    type: Literal["adaptive", "between_tools"]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(_Body):
    type: Literal["disabled"]


def _thinking_type(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return {"enabled": "Enabled", "adaptive": "Other", "between_tools": "Other", "disabled": "Disabled"}.get(kind)


# Tags in capitals stay out of error locations, which then name the client's own fields.
ThinkingConfig = Annotated[
    Union[Annotated[ThinkingEnabled, Tag("Enabled")], Annotated[ThinkingOther, Tag("Other")],
          Annotated[ThinkingDisabled, Tag("Disabled")]],
    Discriminator(_thinking_type, custom_error_type="thinking_type",
                  custom_error_message="must be an object whose type is enabled, disabled, adaptive or between_tools"),
]


class PromptFields(_Body):
    """What makes the prompt: the body of count_tokens, and the start of every Messages body."""

    model: str
    messages: list[Message] = Field(min_length=1)
    system: list[TextBlock] | None = None
    # Tools reach the prompt, so count_tokens counts them as the real prompt does.
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    # Extended thinking: the template's enable_thinking switch and a reasoning budget (api.reasoning).
    thinking: ThinkingConfig | None = None

    _blocks = field_validator("system", mode="before")(_as_blocks)


class MessagesRequest(PromptFields):
    max_tokens: int
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None  # the beta spelling of output_config.format
    # Accepted and ignored: they say nothing about what the model should write.
    metadata: dict[str, Any] | None = None
    context_management: dict[str, Any] | None = None
    service_tier: str | None = None
