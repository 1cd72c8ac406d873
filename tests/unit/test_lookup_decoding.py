"""Prompt-lookup decoding on a tiny random llama built in-process: the lookup generator must
give exactly the tokens, finish reasons and caches of mlx-lm's own BatchGenerator, while
actually taking lookup steps; it must leave batches, sampling and processors to BatchGenerator."""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import make_logits_processors

from serving.engine.lookup_decoding import (
    MAX_NGRAM,
    MIN_NGRAM,
    NgramIndex,
    accepted_prefix,
    draft,
    make_lookup_generator,
)
from serving.engine.request import SamplingParams
from serving.engine.sampling import build_sampler

from .tiny_llama import tiny_llama

# Repetitive prompts, so the n-gram drafts have something to find.
PROMPTS = [[5, 9, 13, 5, 9, 13, 5, 9], [7] * 21, [1, 2, 3, 4, 1, 2, 3, 4, 1, 2], [42, 43]]


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=11)


def _kwargs(stop=()):
    return dict(stop_tokens=[[t] for t in stop], completion_batch_size=4, prefill_batch_size=2,
                prefill_step_size=8, stream=mx.default_stream(mx.default_device()))


def plain(model, stop=()):
    return BatchGenerator(model, **_kwargs(stop))


def lookup(model, stop=(), draft_tokens=4):
    return make_lookup_generator(model, draft_tokens=draft_tokens, **_kwargs(stop))


def decode(gen, prompts, max_tokens=24, **kw):
    uids = gen.insert(prompts, max_tokens=[max_tokens] * len(prompts),
                      samplers=kw.pop("samplers", [build_sampler(SamplingParams(temperature=0.0))] * len(prompts)),
                      **kw)
    out = {u: {"tokens": [], "finish": None, "cache_len": None, "all_tokens": None} for u in uids}
    for _ in range(500):
        _, responses = gen.next()
        for r in responses:
            seq = out[r.uid]
            assert seq["finish"] is None, "no token may follow a finish"
            seq["tokens"].append(r.token)
            if r.finish_reason:
                seq["finish"] = r.finish_reason
                seq["all_tokens"] = list(r.all_tokens)
                seq["cache_len"] = r.prompt_cache[0].offset
        if all(s["finish"] for s in out.values()):
            break
    return [out[u] for u in uids]


def test_draft_and_acceptance_rules():
    assert draft([1, 2, 3, 9, 1, 2, 3, 7, 1, 2, 3], 2) == [7, 1]  # the later "1 2 3" wins
    assert draft([5, 6, 7], 4) == []
    assert accepted_prefix([4, 5, 6], [4, 5, 9, 1]) == 2
    assert accepted_prefix([4, 5], [4, 5, 8]) == 2
    assert accepted_prefix([3], [4, 3]) == 0


def test_alone_it_gives_batchgenerators_tokens_and_takes_lookup_steps(model):
    ref, gen = plain(model), lookup(model)
    for prompt in PROMPTS:
        want, got = decode(ref, [prompt])[0], decode(gen, [prompt])[0]
        assert got["tokens"] == want["tokens"]
        assert got["finish"] == want["finish"] == "length"
        # the cache handed back holds exactly the tokens it says it holds
        assert got["all_tokens"] == want["all_tokens"]
        assert got["cache_len"] == want["cache_len"] == len(want["all_tokens"])
    assert gen.lookup.steps > 0 and gen.lookup.accepted > 0, gen.lookup.as_dict()


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 5])
def test_max_tokens_is_never_exceeded(model, max_tokens):
    for prompt in PROMPTS:
        want = decode(plain(model), [prompt], max_tokens=max_tokens)[0]
        got = decode(lookup(model), [prompt], max_tokens=max_tokens)[0]
        assert got["tokens"] == want["tokens"] and len(got["tokens"]) == max_tokens


def test_a_stop_token_inside_accepted_drafts_ends_the_sequence_there(model):
    tokens = decode(plain(model), [PROMPTS[1]])[0]["tokens"]
    stop = tokens[6]  # a token the answer reaches mid-way
    want = decode(plain(model, stop=[stop]), [PROMPTS[1]])[0]
    gen = lookup(model, stop=[stop])
    got = decode(gen, [PROMPTS[1]])[0]
    assert got["tokens"] == want["tokens"] and got["finish"] == want["finish"] == "stop"
    assert got["all_tokens"] == want["all_tokens"]


def test_batches_sampling_and_processors_are_left_to_batchgenerator(model):
    gen = lookup(model)
    batched = decode(gen, PROMPTS)
    assert [s["tokens"] for s in batched] == [s["tokens"] for s in decode(plain(model), PROMPTS)]
    assert gen.lookup.steps == 0  # four sequences decoding: no lookup step
    processors = [make_logits_processors(repetition_penalty=1.3)]
    decode(gen, [PROMPTS[1]], logits_processors=processors)
    decode(gen, [PROMPTS[1]], samplers=[build_sampler(SamplingParams(temperature=0.8, seed=1))])
    assert gen.lookup.steps == 0


def test_a_sequence_joining_a_lone_one_gets_the_plain_step(model):
    """A lookup step, then a second sequence joins: both must still get their own tokens."""
    ref = plain(model)
    want = [decode(ref, [p])[0]["tokens"] for p in PROMPTS[:2]]
    gen = lookup(model)
    sampler = build_sampler(SamplingParams(temperature=0.0))
    (first,) = gen.insert([PROMPTS[0]], max_tokens=[24], samplers=[sampler])
    got = {first: []}
    for _ in range(6):  # the first decodes alone for a while, taking lookup steps
        for r in gen.next()[1]:
            got[r.uid].append(r.token)
    (second,) = gen.insert([PROMPTS[1]], max_tokens=[24], samplers=[sampler])
    got[second] = []
    for _ in range(200):
        for r in gen.next()[1]:
            got[r.uid].append(r.token)
    assert [got[first], got[second]] == want


def _scan(history: list[int], size: int) -> list[int]:
    """The drafting rule as a plain scan of the history: the oracle for the index."""
    for n in range(min(MAX_NGRAM, len(history) - 1), MIN_NGRAM - 1, -1):
        tail = history[-n:]
        for start in range(len(history) - n - 1, -1, -1):
            if history[start:start + n] == tail:
                return history[start + n:start + n + size]
    return []


def test_the_ngram_index_drafts_what_a_scan_of_the_history_drafts():
    import random

    rng = random.Random(5)
    for _ in range(200):
        history = [rng.randrange(6) for _ in range(rng.randrange(0, 40))]
        index = NgramIndex()
        for cut in range(len(history) + 1):  # grown a piece at a time, as a sequence grows
            index.sync(history[:cut])
            pending, size = rng.randrange(6), rng.randrange(1, 6)
            assert index.draft(pending, size) == _scan(history[:cut] + [pending], size)
            assert draft(history[:cut] + [pending], size) == _scan(history[:cut] + [pending], size)


@pytest.mark.parametrize("policy, backend, step, runs", [
    ("auto", "cpu", "batch", True), ("auto", "cuda", "batch", False), ("auto", "cuda", "compiled", True),
    ("auto", "metal", "compiled", False), ("on", "cuda", "batch", True), ("off", "cpu", "batch", False),
])
def test_lookup_decoding_runs_where_the_policy_and_backend_say(policy, backend, step, runs):
    from serving.app import engine_settings
    from serving.config import build_config

    settings = engine_settings(build_config({"lookup_decoding": policy, "decode_step": step}), backend)
    assert settings.lookup_draft == (4 if runs else 0)
    assert settings.lookup_exact_only == (policy == "auto")
    # --deterministic keeps the one-token step whatever the policy
    assert engine_settings(build_config({"lookup_decoding": policy, "deterministic": True}), backend).lookup_draft == 0


def test_an_unknown_lookup_policy_is_refused():
    from serving.config import build_config

    with pytest.raises(ValueError, match="lookup_decoding must be auto, on or off"):
        build_config({"lookup_decoding": "sometimes"})
