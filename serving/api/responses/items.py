"""Responses items both ways: input items to the neutral chat messages every
template sees, and output items with the stream events that build them.

An output item has three moments, each giving a list of event dicts (the
encoder numbers them): `opened`, `delta` and `closed`; `item()` is its state.
Text is a `MessageOutput`; a tool call will be a `FunctionCallOutput` fed by
the tool-call parser, so the encoder only ever opens, feeds and closes items
in order.
"""

from __future__ import annotations

import uuid

from ..errors import InvalidRequest
from ..images import join_content
from ..prompting import template_call
from .schemas import (ContentPart, CustomToolCallItem, CustomToolCallOutputItem, FunctionCallItem,
                      FunctionCallOutputItem, MessageItem, ReasoningItem)

TEXT_PARTS = ("input_text", "output_text", "text")
MEDIA_PARTS = ("input_image", "input_file", "input_audio")


def _text(content: str | list[ContentPart], media=None, *, role: str = "user", param: str = "input"):
    """The text of a content list; with `media` (an api.images.ImageInputs), input_image parts become
    image entries of the content instead of being refused."""
    if isinstance(content, str):
        return content
    out = []
    for j, part in enumerate(content):
        if part.type == "input_image" and media is not None:
            out.append(media.responses_part(part, role=role, param=f"{param}.{j}"))
        elif part.type in MEDIA_PARTS:
            raise InvalidRequest(f"content part type {part.type!r} is not supported: this model reads text only",
                                 param="input")
        elif part.type == "refusal":
            out.append(part.refusal or "")
        elif part.type in TEXT_PARTS:
            out.append(part.text or "")
        else:
            raise InvalidRequest(f"content part type {part.type!r} is not supported; use input_text",
                                 param="input")
    return join_content(out)


def messages(items: list, *, instructions: str | None = None, media=None, first_index: int = 0) -> list[dict]:
    """The neutral chat messages for `items`, with `instructions` as the first system message.

    Calls join the assistant message just before them (one turn that says
    something and then calls), so parallel calls become one message's tool_calls.
    Errors name items by `first_index` + position (negative for stored history).
    """
    out: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    for i, item in enumerate(items, start=first_index):
        if isinstance(item, MessageItem):
            out.append({"role": item.role, "content": _text(item.content, media, role=item.role,
                                                            param=f"input.{i}.content")})
        elif isinstance(item, (FunctionCallItem, CustomToolCallItem)):
            args = item.arguments if isinstance(item, FunctionCallItem) else item.input
            call = template_call(item.call_id, item.name, args)
            if out and out[-1]["role"] == "assistant":
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, (FunctionCallOutputItem, CustomToolCallOutputItem)):
            message = {"role": "tool", "content": _text(item.output)}
            if item.call_id:
                message["tool_call_id"] = item.call_id
            out.append(message)
        else:
            assert isinstance(item, ReasoningItem)  # the schema admits no other type
    return out


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class TextOutput:
    """An item with one text part that grows by deltas: opened, then response.<TEXT_EVENT>.delta
    per piece, then <TEXT_EVENT>.done, content_part.done and output_item.done.

    A subclass gives its id prefix, its item and part, and any fields its text events carry."""

    ID_PREFIX = ""
    TEXT_EVENT = ""

    def __init__(self, output_index: int) -> None:
        self.id = new_id(self.ID_PREFIX)
        self.index = output_index
        self.status = "in_progress"
        self.text = ""

    def _part(self) -> dict:
        raise NotImplementedError

    def item(self) -> dict:
        raise NotImplementedError

    def _text_fields(self) -> dict:
        return {}

    def _content(self) -> list[dict]:
        return [] if self.status == "in_progress" else [self._part()]

    def _where(self) -> dict:
        return {"item_id": self.id, "output_index": self.index, "content_index": 0}

    def opened(self) -> list[dict]:
        return [{"type": "response.output_item.added", "output_index": self.index, "item": self.item()},
                {"type": "response.content_part.added", **self._where(), "part": self._part()}]

    def delta(self, text: str) -> list[dict]:
        self.text += text
        return [{"type": f"response.{self.TEXT_EVENT}.delta", **self._where(), "delta": text, **self._text_fields()}]

    def closed(self, status: str) -> list[dict]:
        self.status = status
        return [{"type": f"response.{self.TEXT_EVENT}.done", **self._where(), "text": self.text,
                 **self._text_fields()},
                {"type": "response.content_part.done", **self._where(), "part": self._part()},
                {"type": "response.output_item.done", "output_index": self.index, "item": self.item()}]


class MessageOutput(TextOutput):
    """An assistant message with one output_text part."""

    ID_PREFIX = "msg"
    TEXT_EVENT = "output_text"

    def _part(self) -> dict:
        return {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}

    def item(self) -> dict:
        return {"type": "message", "id": self.id, "status": self.status, "role": "assistant",
                "content": self._content()}

    def _text_fields(self) -> dict:
        return {"logprobs": []}


class FunctionCallOutput:
    """A function call whose JSON arguments stream as deltas (fed by the tool-call parser)."""

    def __init__(self, output_index: int, *, name: str, call_id: str | None = None) -> None:
        self.id = new_id("fc")
        self.call_id = call_id or new_id("call")
        self.index = output_index
        self.status = "in_progress"
        self.name = name
        self.arguments = ""

    def item(self) -> dict:
        return {"type": "function_call", "id": self.id, "call_id": self.call_id, "name": self.name,
                "arguments": self.arguments, "status": self.status}

    def opened(self) -> list[dict]:
        return [{"type": "response.output_item.added", "output_index": self.index, "item": self.item()}]

    def delta(self, arguments: str) -> list[dict]:
        self.arguments += arguments
        return [{"type": "response.function_call_arguments.delta", "item_id": self.id,
                 "output_index": self.index, "delta": arguments}]

    def closed(self, status: str) -> list[dict]:
        self.status = status
        # No `name` here: the SDK's event type has none (the item carries it).
        return [{"type": "response.function_call_arguments.done", "item_id": self.id, "output_index": self.index,
                 "arguments": self.arguments},
                {"type": "response.output_item.done", "output_index": self.index, "item": self.item()}]
