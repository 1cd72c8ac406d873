"""Small fakes for unit tests of the API layer (never used for evidence)."""

from __future__ import annotations

from serving.api.generation import ServedModel
from serving.engine.request import Finished, RequestHandle, TextDelta


class FakeTokenizer:
    """One token per character; the chat template joins role-tagged lines."""

    def get_vocab(self):
        return {chr(i): i for i in range(256)}

    def encode(self, text, add_special_tokens=True):
        return [ord(c) % 256 for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        if messages[-1]["role"] == "assistant" and messages[-1]["content"] == "boom":
            raise ValueError("template says no")
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class FakeEngine:
    """Answers every request with a fixed list of text pieces."""

    def __init__(self, pieces=("Hello", ", ", "world"), *, fail: bool = False) -> None:
        self.tokenizer = FakeTokenizer()
        self.pieces = pieces
        self.fail = fail
        self.requests = []

    def submit(self, request):
        self.requests.append(request)
        handle = RequestHandle(request, lambda h: None)
        n = min(len(self.pieces), request.max_tokens)
        for i, piece in enumerate(self.pieces[:n]):
            handle.events.put(TextDelta(piece, i + 1))
        if self.fail:
            handle.events.put(Finished("error", len(request.prompt_tokens), n, "boom"))
        else:
            reason = "length" if n == request.max_tokens else "stop"
            handle.events.put(Finished(reason, len(request.prompt_tokens), n))
        return handle

    def stats(self):
        return {"mode": "fake", "alive": True, "queue_depth": 0}


def served(context_length: int = 64) -> ServedModel:
    return ServedModel(model_id="fake-model", aliases=("alias",), context_length=context_length,
                       vocab_size=256, weights_sha256="0" * 64, source="test")
