"""A response's content blocks, built in order from pieces of output.

Text, `thinking` pieces (from the reasoning parser) and `tool_use` blocks (a new
block per call, its input streamed as JSON text) all go through the same `add`,
so the stream's content_block_* events and the whole response's `content` never
disagree.

A thinking block's signature is the sha256 of its text, sent as a signature_delta just
before the block stops, as Anthropic sends its own. It is no proof of origin (Anthropic's is
encrypted); clients only need it present to pass the block back, and this server drops
earlier thinking from prompts anyway.
"""

from __future__ import annotations

import hashlib
import json

from ..dialect import Frame

# kind -> (the block as content_block_start shows it, its delta type, the field a delta carries)
KINDS = {
    "text": ({"type": "text", "text": ""}, "text_delta", "text"),
    "thinking": ({"type": "thinking", "thinking": "", "signature": ""}, "thinking_delta", "thinking"),
    "tool_use": ({"type": "tool_use", "input": {}}, "input_json_delta", "partial_json"),
}


def _frame(kind: str, **fields) -> Frame:
    return Frame({"type": kind, **fields}, kind)


class ContentBlocks:
    def __init__(self) -> None:
        self.content: list[dict] = []  # the whole response's blocks, complete once closed
        self._open: str | None = None
        self._json = ""

    def add(self, kind: str, piece: str, **start) -> list[Frame]:
        """Append `piece` to the open block of `kind`, or open one; `start` fields
        (a tool call's id and name) always open a new block."""
        frames: list[Frame] = []
        blank, delta_type, field = KINDS[kind]
        if self._open != kind or start:
            frames += self.close()
            block = {**blank, **start}
            frames.append(_frame("content_block_start", index=len(self.content), content_block=dict(block)))
            self.content.append(block)
            self._open = kind
        if kind == "tool_use":
            self._json += piece  # parsed once the block closes: pieces are not valid JSON alone
        elif not piece:
            return frames  # an empty piece opens its block and says nothing (thinking display "omitted")
        else:
            self.content[-1][field] += piece
        frames.append(_frame("content_block_delta", index=len(self.content) - 1,
                             delta={"type": delta_type, field: piece}))
        return frames

    def close(self) -> list[Frame]:
        if self._open is None:
            return []
        frames = []
        block = self.content[-1]
        if self._open == "tool_use":
            block["input"] = json.loads(self._json or "{}")
            self._json = ""
        elif self._open == "thinking":
            block["signature"] = hashlib.sha256(block["thinking"].encode("utf-8")).hexdigest()
            frames.append(_frame("content_block_delta", index=len(self.content) - 1,
                                 delta={"type": "signature_delta", "signature": block["signature"]}))
        self._open = None
        return [*frames, _frame("content_block_stop", index=len(self.content) - 1)]
