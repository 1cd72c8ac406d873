"""Typed request bodies for the Responses dialect.

The body ignores unknown fields, as the OpenAI dialect's does; input items are
a union told apart by `type` (a message may leave it out), and an item type
this server cannot render is a 400 naming it rather than a silent drop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from ..reasoning import Effort, ReasoningFields


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    type: str
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None  # input_image: a data: URL (or http(s) where remote media is allowed)
    file_id: str | None = None  # input_image / input_file uploads, which this server has no store for


class MessageItem(_Body):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(_Body):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str = ""


class FunctionCallOutputItem(_Body):
    type: Literal["function_call_output"]
    call_id: str | None = None
    output: str | list[ContentPart]


class CustomToolCallItem(_Body):
    """Codex's freeform tools (apply_patch): a call whose argument is raw text."""

    type: Literal["custom_tool_call"]
    call_id: str
    name: str
    input: str = ""


class CustomToolCallOutputItem(_Body):
    type: Literal["custom_tool_call_output"]
    call_id: str | None = None
    output: str | list[ContentPart]


class ReasoningItem(_Body):
    """Earlier reasoning; this server's models keep none, so it is skipped."""

    type: Literal["reasoning"]


def _item_type(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if kind in ITEM_TYPES else "unsupported"


ITEM_TYPES = ("message", "function_call", "function_call_output", "custom_tool_call",
              "custom_tool_call_output", "reasoning")

InputItem = Annotated[
    Union[
        Annotated[MessageItem, Tag("message")],
        Annotated[FunctionCallItem, Tag("function_call")],
        Annotated[FunctionCallOutputItem, Tag("function_call_output")],
        Annotated[CustomToolCallItem, Tag("custom_tool_call")],
        Annotated[CustomToolCallOutputItem, Tag("custom_tool_call_output")],
        Annotated[ReasoningItem, Tag("reasoning")],
    ],
    Discriminator(_item_type, custom_error_type="unsupported_item",
                  custom_error_message=f"input item type is not supported here; supported: {', '.join(ITEM_TYPES)}"),
]


class TextFormat(_Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Body):
    format: TextFormat | None = None


class NamedTool(_Body):
    type: Literal["function"]
    name: str


class ReasoningOptions(_Body):
    """`effort` sets thinking and its budget (api.reasoning); no summary is ever written, so
    reasoning items carry the reasoning itself as content and an empty summary."""

    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(ReasoningFields):
    model: str | None = None
    input: list[InputItem] = Field(default_factory=list)
    instructions: str | None = None
    previous_response_id: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedTool | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningOptions | None = None
    text: TextConfig | None = None
    store: bool = True
    stream: bool = False
    include: list[str] | None = None
    prompt_cache_key: str | None = None
    metadata: dict[str, str] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _string_input(cls, data):
        # A bare string is one user message; making it an item here keeps one
        # shape for rendering, storing and error locations ("input.2.call_id").
        if isinstance(data, dict) and isinstance(data.get("input"), str):
            return {**data, "input": [{"type": "message", "role": "user", "content": data["input"]}]}
        return data
