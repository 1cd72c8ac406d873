"""The embedding model a server serves beside its chat model: resolved, loaded, batched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .batcher import Batcher, BatchSettings
from .model import Embedder, load_embedder


@dataclass(frozen=True)
class EmbeddingModelInfo:
    model_id: str
    dimensions: int
    max_tokens: int  # per input, special tokens included
    vocab_size: int
    weights_sha256: str
    source: str


class EmbeddingService:
    """What the API layer uses: the model's facts, its tokenizer side, and the batcher."""

    def __init__(self, info: EmbeddingModelInfo, text: Embedder, batcher: Batcher) -> None:
        self.info = info
        self.text = text  # tokenize() and frame(), safe from HTTP threads
        self.batcher = batcher

    @property
    def alive(self) -> bool:
        return self.batcher.alive

    def embed(self, sequences: list[list[int]], *, timeout_s: float | None = None) -> np.ndarray:
        return self.batcher.embed(sequences, timeout_s=timeout_s)

    def stats(self) -> dict:
        return self.batcher.stats()

    def stop(self) -> None:
        self.batcher.stop()


def open_embeddings(name_or_path: str, *, cache_dir: Path, dtype: str, progress: Callable[[str], None],
                    settings: BatchSettings = BatchSettings(), load_timeout_s: float | None = 600) -> EmbeddingService:
    """Resolve an embedding model (catalog id or local folder), load it on its worker thread, start serving."""
    from ..catalog import resolve_model

    resolved = resolve_model(name_or_path, cache_dir=cache_dir, dtype=dtype, progress=progress, kind="embedding")
    # Imported here, on the calling (main) thread: first imported on the worker thread, this
    # stack sometimes aborts the process at exit ("terminate called without an active exception").
    import mlx_embeddings.utils  # noqa: F401

    batcher = Batcher(lambda: load_embedder(resolved.path), settings)
    try:
        embedder = batcher.start(timeout_s=load_timeout_s)
    except RuntimeError as exc:  # the loader's own error, said once, for the command line
        raise ValueError(f"cannot serve {name_or_path} as an embedding model: {exc.__cause__ or exc}") from exc
    info = EmbeddingModelInfo(model_id=resolved.model_id, dimensions=embedder.dimensions,
                              max_tokens=embedder.max_tokens, vocab_size=embedder.vocab_size,
                              weights_sha256=resolved.weights_sha256, source=resolved.source)
    return EmbeddingService(info, embedder, batcher)
