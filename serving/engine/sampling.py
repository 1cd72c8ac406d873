"""Per-request samplers and logits processors, as closures over mlx-lm's pieces."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    make_logits_processors,
    make_sampler,
)

from .request import SamplingParams


def build_sampler(params: SamplingParams):
    """A sampler; seeded requests get their own PRNG key so batch neighbours
    cannot change their draws."""
    if params.temperature <= 0:
        greedy = make_sampler(0.0)
        greedy.greedy = True  # lets a generator take the argmax it computes anyway
        return greedy
    if params.seed is None:
        return make_sampler(
            params.temperature,
            top_p=params.top_p if params.top_p < 1.0 else 0.0,
            min_p=params.min_p,
            top_k=params.top_k,
        )
    return _seeded_sampler(params)


def _seeded_sampler(params: SamplingParams):
    state = {"key": mx.random.key(params.seed)}
    inv_temp = 1.0 / params.temperature

    def sampler(logprobs: mx.array) -> mx.array:
        if 0 < params.top_p < 1.0:
            logprobs = apply_top_p(logprobs, params.top_p)
        if params.min_p > 0:
            logprobs = apply_min_p(logprobs, params.min_p)
        if params.top_k > 0:
            logprobs = apply_top_k(logprobs, params.top_k)
        state["key"], sub = mx.random.split(state["key"])
        return mx.random.categorical(logprobs * inv_temp, key=sub)

    return sampler


def build_logits_processors(params: SamplingParams, *, context_size: int):
    """OpenAI penalties apply to everything generated so far, so the context
    window spans the whole completion rather than mlx-lm's default 20 tokens."""
    return make_logits_processors(
        logit_bias=params.logit_bias or None,
        repetition_penalty=params.repetition_penalty if params.repetition_penalty != 1.0 else None,
        repetition_context_size=context_size,
        presence_penalty=params.presence_penalty or None,
        presence_context_size=context_size,
        frequency_penalty=params.frequency_penalty or None,
        frequency_context_size=context_size,
    )
