"""The reasoning output item: the model's reasoning text, streamed before the answer.

Its events follow the message item's pattern with the reasoning types the SDK declares:
output_item.added, content_part.added (a reasoning_text part), response.reasoning_text.delta
per piece, then reasoning_text.done, content_part.done and output_item.done. `summary` stays
empty: no summary is written, the reasoning itself is the content.
"""

from __future__ import annotations

from .items import TextOutput


class ReasoningOutput(TextOutput):
    ID_PREFIX = "rs"
    TEXT_EVENT = "reasoning_text"

    def _part(self) -> dict:
        return {"type": "reasoning_text", "text": self.text}

    def item(self) -> dict:
        return {"type": "reasoning", "id": self.id, "summary": [], "status": self.status,
                "content": self._content()}
