"""The OpenAI wire shapes of chat and legacy completions, streamed and whole.

A shape knows how to spell a delta, a finish and a full response; the
resource and the stream runner are shared between both endpoints.
"""

from __future__ import annotations

import time
import uuid


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class _Shape:
    object_whole: str
    object_chunk: str
    id_prefix: str

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _envelope(self, obj: str, **fields) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model_id, **fields}

    def chunk(self, choices: list, **fields) -> dict:
        return self._envelope(self.object_chunk, choices=choices, **fields)

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        return self.chunk([], usage=usage(prompt_tokens, completion_tokens))

    def head_chunks(self) -> list[dict]:
        return []

    def delta_chunk(self, text: str) -> dict:
        raise NotImplementedError

    def finish_chunk(self, reason: str) -> dict:
        raise NotImplementedError

    def whole(self, text: str, reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
        raise NotImplementedError


class ChatShape(_Shape):
    object_whole = "chat.completion"
    object_chunk = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def head_chunks(self) -> list[dict]:
        # Sent at once so headers go out before a slow prefill (waitress only
        # flushes headers with the first non-empty chunk).
        return [self.chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])]

    def delta_chunk(self, text: str) -> dict:
        return self.chunk([{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}])

    def finish_chunk(self, reason: str) -> dict:
        return self.chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def whole(self, text: str, reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
        message = {"role": "assistant", "content": text}
        return self._envelope(
            self.object_whole,
            choices=[{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
            usage=usage(prompt_tokens, completion_tokens),
        )


class CompletionShape(_Shape):
    object_whole = "text_completion"
    object_chunk = "text_completion"
    id_prefix = "cmpl"

    def delta_chunk(self, text: str) -> dict:
        return self.chunk([{"index": 0, "text": text, "logprobs": None, "finish_reason": None}])

    def finish_chunk(self, reason: str) -> dict:
        return self.chunk([{"index": 0, "text": "", "logprobs": None, "finish_reason": reason}])

    def whole(self, text: str, reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
        return self._envelope(
            self.object_whole,
            choices=[{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
            usage=usage(prompt_tokens, completion_tokens),
        )
