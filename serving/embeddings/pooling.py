"""How token states become one sentence vector, read from the sentence-transformers files.

A sentence-transformers folder says how its vectors are made: `1_Pooling/config.json` names
the pooling (mean over the real tokens for all-MiniLM-L6-v2) and `modules.json` lists a
`Normalize` module when vectors are scaled to unit length. We follow those files, so the
vectors are the ones sentence-transformers gives for the same tokens. A folder without them
gets mean pooling and normalisation, which is what mlx-embeddings' `text_embeds` holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
_UNSUPPORTED = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                "pooling_mode_lasttoken")


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"  # "mean" | "cls"
    normalize: bool = True


def read_pooling(folder: Path) -> Pooling:
    """The pooling a sentence-transformers folder declares; mean + normalise when it declares none."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return Pooling()
    modules = json.loads(modules_file.read_text())
    types = [str(m.get("type", "")) for m in modules]
    normalize = any(t.endswith(".Normalize") for t in types)
    pooling_entry = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    if pooling_entry is None:
        return Pooling(normalize=normalize)
    config = json.loads((folder / pooling_entry.get("path", "") / "config.json").read_text())
    chosen = [mode for key, mode in _MODES.items() if config.get(key)]
    odd = [key for key in _UNSUPPORTED if config.get(key)]
    if odd or len(chosen) != 1:
        raise ValueError(f"{folder}: pooling {sorted(k for k, v in config.items() if v is True)} is not supported; "
                         "only one of mean or cls pooling is")
    return Pooling(chosen[0], normalize)


def pool(hidden: mx.array, mask: mx.array, pooling: Pooling) -> mx.array:
    """(batch, length, dims) token states and a (batch, length) 0/1 mask -> (batch, dims) vectors."""
    if pooling.mode == "cls":
        vectors = hidden[:, 0, :]
    else:
        weights = mask.astype(hidden.dtype)[:, :, None]
        counts = mx.maximum(weights.sum(axis=1), 1e-9)  # sentence-transformers' clamp
        vectors = (hidden * weights).sum(axis=1) / counts
    if pooling.normalize:
        norms = mx.linalg.norm(vectors, axis=-1, keepdims=True)
        vectors = vectors / mx.maximum(norms, 1e-12)  # torch.nn.functional.normalize's eps
    return vectors
