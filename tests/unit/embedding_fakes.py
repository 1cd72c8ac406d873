"""Small fakes for the embeddings route and batcher (never used for evidence)."""

from __future__ import annotations

import threading

import numpy as np

from serving.embeddings import Batcher, BatchSettings, EmbeddingModelInfo, EmbeddingService

CLS, SEP, PAD = 1, 2, 0


class FakeText:
    """One token per character (its code point mod 250, plus 3), framed by CLS ... SEP."""

    max_tokens = 24
    vocab_size = 256
    dimensions = 4

    def tokenize(self, texts):
        return [[CLS, *self.ids(t), SEP] for t in texts]

    @staticmethod
    def ids(text):
        return [ord(c) % 250 + 3 for c in text]

    def frame(self, ids):
        if len(ids) >= 2 and ids[0] == CLS and ids[-1] == SEP:
            return list(ids)
        return [CLS, *ids, SEP]


class FakeForward:
    """A deterministic unit vector per sequence (padding-free, so batching can't change it);
    records every batch. `gate`: the first call waits for it, so tests can queue work behind it."""

    def __init__(self, *, fail_when=None, gate: threading.Event | None = None) -> None:
        self.batches: list[list[list[int]]] = []
        self.fail_when = fail_when
        self.gate = gate
        self.entered = threading.Event()

    def forward(self, batch):
        self.batches.append([list(s) for s in batch])
        self.entered.set()
        if self.gate is not None and len(self.batches) == 1:
            self.gate.wait(10)
        if self.fail_when is not None and self.fail_when(batch):
            raise RuntimeError("planted failure")
        return np.stack([vector_of(s) for s in batch])


def vector_of(seq) -> np.ndarray:
    v = np.array([len(seq), sum(seq) % 97 + 1, seq[1] if len(seq) > 1 else 0, 1.0], dtype=np.float32)
    return v / np.linalg.norm(v)


INFO = EmbeddingModelInfo(model_id="fake-embed", dimensions=4, max_tokens=FakeText.max_tokens, vocab_size=256,
                          weights_sha256="1" * 64, source="test")


def fake_service(forward: FakeForward | None = None, settings: BatchSettings = BatchSettings(collect_window_s=0.0)):
    forward = forward or FakeForward()
    batcher = Batcher(lambda: forward, settings)
    batcher.start(timeout_s=10)
    return EmbeddingService(INFO, FakeText(), batcher)
