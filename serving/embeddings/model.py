"""One embedding model and its tokenizer, loaded through mlx-embeddings from a local folder.

HTTP threads tokenize (under a lock: a fast tokenizer is not safe to call from several threads
at once); only the batcher's thread runs `forward`, so MLX is driven from one thread.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from .pooling import Pooling, pool, read_pooling

# tokenizer_config.json says 1e30 when a model declares no limit.
_NO_LIMIT = 1_000_000


def special_frame(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The token ids the tokenizer puts before and after a text ([CLS] and [SEP] for BERT).

    Found by encoding one word with and without special tokens, so no model's ids are assumed.
    """
    framed = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    bare = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for start in range(len(framed) - len(bare) + 1):
        if framed[start:start + len(bare)] == bare:
            return tuple(framed[:start]), tuple(framed[start + len(bare):])
    raise ValueError("cannot tell which special tokens this tokenizer adds")


class Embedder:
    """Tokenizes text, frames token ids, and turns padded batches into unit vectors."""

    def __init__(self, model, tokenizer, *, pooling: Pooling, max_tokens: int, vocab_size: int,
                 dimensions: int, pad_id: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_tokens = max_tokens
        self.vocab_size = vocab_size
        self.dimensions = dimensions
        self.pad_id = pad_id
        self._lock = threading.Lock()
        self.prefix, self.suffix = special_frame(tokenizer)

    # ---- HTTP-thread side ----
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, special tokens included, as the model sees them."""
        with self._lock:
            return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def frame(self, ids: list[int]) -> list[int]:
        """Token ids as a client sends them (a text's tokens) with the special tokens around them.

        Ids that already start and end with them (a tokenizer's full output) are kept as they are.
        """
        p, s = list(self.prefix), list(self.suffix)
        if len(ids) >= len(p) + len(s) and ids[:len(p)] == p and (not s or ids[-len(s):] == s):
            return list(ids)
        return [*p, *ids, *s]

    # ---- batcher-thread side ----
    def forward(self, batch: list[list[int]]) -> np.ndarray:
        """(len(batch), dimensions) float32 vectors of right-padded sequences."""
        import mlx.core as mx

        longest = max(len(seq) for seq in batch)
        ids = np.full((len(batch), longest), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(batch), longest), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1.0
        mask_mx = mx.array(mask)
        out = self.model(mx.array(ids), attention_mask=mask_mx)
        vectors = pool(out.last_hidden_state, mask_mx, self.pooling).astype(mx.float32)
        mx.eval(vectors)
        return np.array(vectors)


def _max_tokens(config: dict, tokenizer) -> int:
    limits = [int(config["max_position_embeddings"])] if config.get("max_position_embeddings") else []
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < _NO_LIMIT:
        limits.append(declared)
    if not limits:
        raise ValueError("the model declares no maximum input length (max_position_embeddings)")
    return min(limits)


def load_embedder(folder: Path) -> Embedder:
    """Load a local mlx-embeddings folder (never a hub id: the folder must exist)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} holds no config.json, so it is not an embedding model folder")
    from mlx_embeddings.utils import load

    config = json.loads((folder / "config.json").read_text())
    try:
        model, tokenizer = load(str(folder))
    except (ImportError, ModuleNotFoundError) as exc:
        raise ValueError(f"mlx-embeddings cannot load a {config.get('model_type')!r} model: {exc}") from None
    hidden = getattr(model.config, "hidden_size", None) or config.get("hidden_size")
    vocab = getattr(model.config, "vocab_size", None) or config.get("vocab_size")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.get("pad_token_id", 0)
    return Embedder(model, tokenizer, pooling=read_pooling(folder), max_tokens=_max_tokens(config, tokenizer),
                    vocab_size=int(vocab), dimensions=int(hidden), pad_id=int(pad_id))
