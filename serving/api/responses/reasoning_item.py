"""The reasoning output item: the model's reasoning text, streamed before the answer.

Its events follow the message item's pattern with the reasoning types the SDK declares:
output_item.added, content_part.added (a reasoning_text part), response.reasoning_text.delta
per piece, then reasoning_text.done, content_part.done and output_item.done. `summary` stays
empty: no summary is written, the reasoning itself is the content.
"""

from __future__ import annotations

from .items import new_id


class ReasoningOutput:
    def __init__(self, output_index: int) -> None:
        self.id = new_id("rs")
        self.index = output_index
        self.status = "in_progress"
        self.text = ""

    def _part(self) -> dict:
        return {"type": "reasoning_text", "text": self.text}

    def item(self) -> dict:
        return {"type": "reasoning", "id": self.id, "summary": [], "status": self.status,
                "content": [] if self.status == "in_progress" else [self._part()]}

    def _where(self) -> dict:
        return {"item_id": self.id, "output_index": self.index, "content_index": 0}

    def opened(self) -> list[dict]:
        return [{"type": "response.output_item.added", "output_index": self.index, "item": self.item()},
                {"type": "response.content_part.added", **self._where(), "part": self._part()}]

    def delta(self, text: str) -> list[dict]:
        self.text += text
        return [{"type": "response.reasoning_text.delta", **self._where(), "delta": text}]

    def closed(self, status: str) -> list[dict]:
        self.status = status
        return [{"type": "response.reasoning_text.done", **self._where(), "text": self.text},
                {"type": "response.content_part.done", **self._where(), "part": self._part()},
                {"type": "response.output_item.done", "output_index": self.index, "item": self.item()}]
