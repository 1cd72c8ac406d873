"""Typed request bodies for the Anthropic Messages dialect.

Unknown top-level fields are ignored (Claude Code sends many we have no use
for); known fields are validated, so a wrong type or range is a 400 naming the
field. Content and `system` may be a string or a list of blocks; a string is
read as one text block, so the rest of the dialect sees only blocks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    effort: str | None = None  # no meaning for this model


class PromptFields(_Body):
    """What makes the prompt: the body of count_tokens, and the start of every Messages body."""

    model: str
    messages: list[Message] = Field(min_length=1)
    system: list[TextBlock] | None = None
    # Tools reach the prompt, so count_tokens counts them as the real prompt does.
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    # Extended thinking: this model has no reasoning mode, so a request for it changes nothing.
    thinking: dict[str, Any] | None = None

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
