"""The chosen token's log-probability and the top k, from one step's distribution."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .request import TokenLogprob


def token_logprob(logprobs, token: int, top_k: int) -> TokenLogprob:
    """`logprobs` is the step's normalised log-distribution over the vocabulary
    (an mx.array from mlx-lm, or anything numpy can view)."""
    if isinstance(logprobs, mx.array):
        # numpy cannot view an mx.array of bfloat16 (no buffer format for it): widen it in MLX first
        logprobs = logprobs.astype(mx.float32)
    values = np.asarray(logprobs, dtype=np.float32).reshape(-1)
    chosen = float(values[token])
    if top_k <= 0:
        return TokenLogprob(token, chosen)
    k = min(top_k, values.size)
    idx = np.argpartition(-values, k - 1)[:k]
    # Highest first; ties broken by token id so the order is reproducible.
    order = sorted(idx.tolist(), key=lambda i: (-values[i], i))
    return TokenLogprob(token, chosen, tuple((int(i), float(values[i])) for i in order))
