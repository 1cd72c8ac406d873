"""Neutral engine events to a Responses object, streamed as typed, numbered events or whole.

The stream is `response.created`, `response.in_progress`, then each output
item's events (opened, deltas, closed), then `response.completed` or
`response.incomplete` carrying the whole object; a failure after the stream
began is an `error` event and then `response.failed`. Every event names its
type twice (the SSE `event:` line and the data's "type") and carries a
`sequence_number` counting from 0.
"""

from __future__ import annotations

import time

from pydantic import TypeAdapter

from ...engine.request import Finished, StepOutput, Usage
from ..dialect import KEEPALIVE, Frame
from ..errors import APIError
from ..reasoning_filter import ReasoningText
from .items import FunctionCallOutput, MessageOutput, new_id
from .reasoning_item import ReasoningOutput
from .schemas import InputItem
from .store import ResponseStore

# The Response object's error.code is a closed list in OpenAI's schema.
FAILURE_CODES = {429: "rate_limit_exceeded"}

STORED_ITEMS = TypeAdapter(list[InputItem])


def usage_body(u: Usage) -> dict:
    """Usage as the Response object carries it. cache_write_tokens is 0 for the reason the
    Anthropic dialect gives cache_creation_input_tokens 0: nothing is charged for a write."""
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens or 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


class ResponsesEncoder:
    """One response: its output items in order, the event counter, and where to keep it when done."""

    def __init__(self, *, model_id: str, echo: dict, conversation: list, store: ResponseStore | None) -> None:
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.model_id = model_id
        self.echo = echo
        self.conversation = conversation
        self.store = store
        self.outputs: list = []
        self.current = None  # the open output item, if any
        self.sequence = 0

    def response(self, status: str, *, usage: dict | None = None, incomplete: dict | None = None,
                 error: dict | None = None) -> dict:
        # No output_text: the SDKs compute that property from the output items; the wire
        # object (and the SDK type, in strict conformance) has no such field.
        output = [item.item() for item in self.outputs]
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": status,
                "error": error, "incomplete_details": incomplete, "model": self.model_id, "output": output,
                "usage": usage, **self.echo}

    def _frames(self, events: list[dict]) -> list[Frame]:
        frames = []
        for event in events:
            frames.append(Frame({"type": event["type"], "sequence_number": self.sequence, **event},
                                event=event["type"]))
            self.sequence += 1
        return frames

    def _open(self, item) -> list[dict]:
        events = self.current.closed("completed") if self.current is not None else []
        self.outputs.append(item)
        self.current = item
        return events + item.opened()

    def _close(self, status: str) -> list[dict]:
        events = self.current.closed(status) if self.current is not None else []
        self.current = None
        return events

    def _text(self, text: str) -> list[dict]:
        events = [] if isinstance(self.current, MessageOutput) else self._open(MessageOutput(len(self.outputs)))
        return events + self.current.delta(text)

    def _reason(self, text: str) -> list[dict]:
        events = [] if isinstance(self.current, ReasoningOutput) else self._open(ReasoningOutput(len(self.outputs)))
        return events + self.current.delta(text)

    def _conclude(self, fin: Finished) -> tuple[list[dict], dict]:
        status, incomplete = "completed", None
        if fin.reason == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        # A text answer always has its message item, even an empty one (after reasoning too);
        # reasoning cut off by the output limit is as incomplete as the answer.
        events = self._close(status)
        if not any(isinstance(o, (MessageOutput, FunctionCallOutput)) for o in self.outputs):
            events += self._open(MessageOutput(len(self.outputs))) + self._close(status)
        self._remember()
        return events, self.response(status, usage=usage_body(fin.usage), incomplete=incomplete)

    def _remember(self) -> None:
        if self.store is not None:
            outputs = STORED_ITEMS.validate_python([item.item() for item in self.outputs])
            self.store.put(self.id, [*self.conversation, *outputs])

    def head(self) -> list[Frame]:
        # Sent at once, so headers go out before a slow prefill.
        return self._frames([{"type": "response.created", "response": self.response("in_progress")},
                             {"type": "response.in_progress", "response": self.response("in_progress")}])

    def step(self, out: StepOutput) -> list[Frame]:
        return self._frames(self._text(out.text)) if out.text else []

    def reasoning(self, piece: ReasoningText) -> list[Frame]:
        return self._frames(self._reason(piece.text)) if piece.text else []

    def _call(self, call) -> list[dict]:
        item = FunctionCallOutput(len(self.outputs), name=call.name, call_id=call.id)
        return self._open(item) + item.delta(call.arguments)

    def tool_call(self, call) -> list[Frame]:
        return self._frames(self._call(call))

    def finish(self, fin: Finished) -> list[Frame]:
        events, response = self._conclude(fin)
        return self._frames([*events, {"type": f"response.{response['status']}", "response": response}])

    def error(self, err: APIError) -> list[Frame]:
        if self.current is not None:
            self.current.status = "incomplete"
        failed = self.response("failed", error={"code": FAILURE_CODES.get(err.status, "server_error"),
                                                "message": err.message})
        return self._frames([{"type": "error", "code": err.code, "message": err.message, "param": err.param},
                             {"type": "response.failed", "response": failed}])

    def idle(self) -> list[Frame]:
        return [KEEPALIVE]

    def whole(self, outputs: list, fin: Finished) -> dict:
        for out in outputs:
            if isinstance(out, ReasoningText):
                self._reason(out.text)
            elif not isinstance(out, StepOutput):
                self._call(out)
            elif out.text:
                self._text(out.text)
        return self._conclude(fin)[1]
