"""Sentence embeddings: an mlx-embeddings model behind one batching worker thread."""

from .batcher import Batcher, BatchSettings, EmbeddingBusy, EmbeddingDown, EmbeddingFailed, EmbeddingTimeout
from .service import EmbeddingModelInfo, EmbeddingService, open_embeddings

__all__ = ["Batcher", "BatchSettings", "EmbeddingBusy", "EmbeddingDown", "EmbeddingFailed", "EmbeddingTimeout",
           "EmbeddingModelInfo", "EmbeddingService", "open_embeddings"]
