"""Token-level comparison of one generation against its serial reference: pure functions over ids.

Words never enter: two generations agree at a position only when the token ids there are
equal. Lengths count too: a generation that stops early (or runs on) diverges where the
shorter one ends.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_divergence(reference: Sequence[int], other: Sequence[int]) -> int | None:
    """The first index where the two id sequences differ; None when they are identical.

    When one is a strict prefix of the other, they diverge at the shorter one's length.
    """
    shorter = min(len(reference), len(other))
    for i in range(shorter):
        if reference[i] != other[i]:
            return i
    return None if len(reference) == len(other) else shorter


def agreement(reference: Sequence[int], other: Sequence[int]) -> float:
    """The fraction of tokens matching up to the first divergence: the common prefix over the
    longer sequence's length (1.0 only for identical sequences, and for two empty ones)."""
    index = first_divergence(reference, other)
    if index is None:
        return 1.0
    return index / max(len(reference), len(other))


def margin(top: Sequence[dict]) -> float | None:
    """Top-1 minus top-2 log-probability of one step's top_logprobs entries (None with fewer than 2)."""
    values = sorted((float(t["logprob"]) for t in top), reverse=True)
    return values[0] - values[1] if len(values) >= 2 else None


def margin_at(margins: Sequence[float | None], index: int | None) -> float | None:
    """The reference's top-1 minus top-2 margin at the divergence point: small means a near-tie that
    a rounding difference can flip; large means the batch really changed the computation. None when
    identical, or when the reference has no step there (it ended: its end-of-text step is not returned)."""
    if index is None or index >= len(margins):
        return None
    return margins[index]


def max_abs_logprob_delta(reference: Sequence[float], other: Sequence[float], upto: int) -> float | None:
    """The largest |difference| of the chosen token's log-probability over the first `upto` steps,
    where both chose the same token: numerical drift that did not (yet) change a token."""
    n = min(upto, len(reference), len(other))
    if n == 0:
        return None
    return max(abs(float(reference[i]) - float(other[i])) for i in range(n))


def match(reference: dict, other: dict) -> dict:
    """The record's "match" block: `reference` and `other` are ok samples (token_ids, logprobs, margins)."""
    ref_ids, ids = reference["token_ids"], other["token_ids"]
    index = first_divergence(ref_ids, ids)
    upto = len(ref_ids) if index is None else index
    return {"exact": index is None, "first_divergence": index, "agreement": agreement(ref_ids, ids),
            "margin": margin_at(reference["margins"], index), "reference_length": len(ref_ids),
            "length": len(ids),
            "max_abs_logprob_delta": max_abs_logprob_delta(reference["logprobs"], other["logprobs"], upto)}
