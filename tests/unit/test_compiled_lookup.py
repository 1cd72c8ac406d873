"""Prompt-lookup steps in the compiled bucketed step (`--decode-step compiled` with lookup on), on
a tiny random llama built in-process: a lone greedy sequence must get exactly the plain compiled
step's tokens, log-probabilities and finish reasons while taking lookup steps; batches, samplers
and processors keep the one-token step."""

from __future__ import annotations

import pytest
from mlx_lm.sample_utils import make_logits_processors

from serving.engine.bucketed_step import BucketedGenerator
from serving.engine.request import SamplingParams
from serving.engine.sampling import build_sampler

from .tiny_llama import tiny_llama

# Repetitive prompts, so the n-gram drafts have something to find.
PROMPTS = [[5, 9, 13, 5, 9, 13, 5, 9], [7] * 21, [1, 2, 3, 4, 1, 2, 3, 4, 1, 2], [42, 43]]


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=11)


def bucketed(model, *, lookup_draft=0, stop=(), rows=8, capacity=64, fused=True):
    return BucketedGenerator(model, stop_tokens=set(stop), rows=rows, capacity=capacity, prefill_step_size=4,
                             prefill_per_step=2, min_capacity=8, fused=fused, lookup_draft=lookup_draft)


def decode(gen, prompts, max_tokens=24, **kw):
    uids = gen.insert(prompts, max_tokens=[max_tokens] * len(prompts), **kw)
    out = {u: ([], [], None) for u in uids}
    for _ in range(500):
        for r in gen.next()[1]:
            tokens, lps, finish = out[r.uid]
            assert finish is None, "no token may follow a finish"
            out[r.uid] = (tokens + [r.token], lps + [r.logprobs[r.token].item()], r.finish_reason)
        if all(finish for _, _, finish in out.values()):
            break
    return [out[u] for u in uids]


def tokens_of(results):
    return [(tokens, finish) for tokens, _, finish in results]


@pytest.mark.parametrize("fused", [True, False])
def test_alone_it_gives_the_plain_compiled_steps_tokens_and_takes_lookup_steps(model, fused):
    gen = bucketed(model, lookup_draft=4, fused=fused)
    for prompt in PROMPTS:
        want = decode(bucketed(model, fused=fused), [prompt])
        got = decode(gen, [prompt])
        assert tokens_of(got) == tokens_of(want)
        # log-probabilities from a 5-token forward: the same numbers up to summation order
        assert got[0][1] == pytest.approx(want[0][1], abs=1e-4)
    assert gen.lookup.steps > 0 and gen.lookup.accepted > 0, gen.lookup.as_dict()
    assert gen.capacity <= 64


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 5])
def test_max_tokens_is_never_exceeded(model, max_tokens):
    for prompt in PROMPTS:
        want = decode(bucketed(model), [prompt], max_tokens=max_tokens)
        got = decode(bucketed(model, lookup_draft=4), [prompt], max_tokens=max_tokens)
        assert tokens_of(got) == tokens_of(want) and len(got[0][0]) == max_tokens


def test_a_stop_token_inside_accepted_drafts_ends_the_sequence_there(model):
    stop = decode(bucketed(model), [PROMPTS[1]])[0][0][6]  # a token the answer reaches mid-way
    want = decode(bucketed(model, stop=[stop]), [PROMPTS[1]])
    gen = bucketed(model, lookup_draft=4, stop=[stop])
    got = decode(gen, [PROMPTS[1]])
    assert tokens_of(got) == tokens_of(want) and got[0][2] == "stop"
    assert gen.lookup.steps > 0


def test_the_context_limit_holds_the_padded_verifying_forward(model):
    """Near the buffer's end a lookup step would write past it: the plain step decodes there."""
    prompt = PROMPTS[1]
    want = decode(bucketed(model, capacity=32), [prompt], max_tokens=10)
    got = decode(bucketed(model, capacity=32, lookup_draft=4), [prompt], max_tokens=10)
    assert tokens_of(got) == tokens_of(want) and len(got[0][0]) == 10


def test_batches_samplers_and_processors_keep_the_one_token_step(model):
    gen = bucketed(model, lookup_draft=4)
    assert tokens_of(decode(gen, PROMPTS)) == tokens_of(decode(bucketed(model), PROMPTS))
    assert gen.lookup.steps == 0  # four sequences decoding: no lookup step
    decode(gen, [PROMPTS[1]], logits_processors=[[make_logits_processors(repetition_penalty=1.3)[0]]])
    decode(gen, [PROMPTS[1]], samplers=[build_sampler(SamplingParams(temperature=0.8, seed=1))])
    assert gen.lookup.steps == 0


def test_a_sequence_joining_a_lone_one_gets_the_plain_step(model):
    want = [tokens for tokens, _, _ in (decode(bucketed(model), [p])[0] for p in PROMPTS[:2])]
    gen = bucketed(model, lookup_draft=4)
    (first,) = gen.insert([PROMPTS[0]], max_tokens=[24])
    got = {first: []}
    for _ in range(4):  # the first decodes alone for a while, taking lookup steps
        for r in gen.next()[1]:
            got[r.uid].append(r.token)
    assert gen.lookup.steps > 0
    (second,) = gen.insert([PROMPTS[1]], max_tokens=[24])
    got[second] = []
    for _ in range(200):
        for r in gen.next()[1]:
            got[r.uid].append(r.token)
    assert [got[first], got[second]] == want


def test_the_factory_gives_lookup_steps_to_the_compiled_step_only(model):
    from types import SimpleNamespace

    from serving.engine.fixed_shape import FixedShapeGenerator
    from serving.engine.generator import make_fixed_shape_generator
    from serving.engine.loop import EngineSettings

    tokenizer = SimpleNamespace(eos_token_ids=[0])
    compiled = make_fixed_shape_generator(model, tokenizer, EngineSettings(
        max_concurrency=2, compiled_step_context=64, lookup_draft=3))
    assert isinstance(compiled, BucketedGenerator) and compiled.draft_tokens == 3 and compiled.lookup is not None
    off = make_fixed_shape_generator(model, tokenizer, EngineSettings(max_concurrency=2, compiled_step_context=64))
    assert off.lookup is None
    # batch-invariant decoding must keep one shape per step: never a lookup step
    invariant = make_fixed_shape_generator(model, tokenizer, EngineSettings(
        max_concurrency=2, batch_invariant_context=64, lookup_draft=3))
    assert type(invariant) is FixedShapeGenerator and getattr(invariant, "lookup", None) is None


def test_the_per_token_verifying_forward_gives_the_one_token_steps_tokens(model):
    """On CUDA the verifying forward runs as one-token products and attention rows (fused_decode's
    per-token forms); forced on here, the tokens and log-probabilities must be the plain step's."""
    gen = bucketed(model, lookup_draft=4)
    gen._fused.per_token = True
    for prompt in PROMPTS:
        want = decode(bucketed(model), [prompt])
        got = decode(gen, [prompt])
        assert tokens_of(got) == tokens_of(want)
        assert got[0][1] == pytest.approx(want[0][1], abs=1e-5)
    assert gen.lookup.steps > 0 and gen.lookup.accepted > 0, gen.lookup.as_dict()


def test_per_token_products_are_the_products(model):
    import mlx.core as mx

    from serving.engine.fused_decode import _per_token_linear

    x, w = mx.random.normal((3, 5, 64), key=mx.random.key(1)), mx.random.normal((40, 64), key=mx.random.key(2))
    got = _per_token_linear(x, w)
    assert got.shape == (3, 5, 40)
    assert mx.allclose(got, x @ w.T, atol=1e-5).item()


def test_auto_drops_lookup_steps_where_the_verifying_forward_cannot_sum_per_token(model, monkeypatch):
    import serving.engine.fused_decode as fused_decode

    assert not fused_decode.sums_differ_by_row_count()  # the CPU: any verifying forward will do
    assert bucketed(model, lookup_draft=4, fused=False).lookup is not None
    monkeypatch.setattr(fused_decode, "sums_differ_by_row_count", lambda: True)  # as on CUDA

    def auto(fused):
        return BucketedGenerator(model, stop_tokens=set(), rows=2, capacity=64, prefill_step_size=4,
                                 prefill_per_step=2, min_capacity=8, fused=fused, lookup_draft=4,
                                 lookup_exact_only=True)

    with_forms = auto(fused=True)
    assert with_forms._fused.per_token and with_forms.lookup is not None
    assert auto(fused=False).lookup is None  # the model's own forward: no per-token forms
    forced = BucketedGenerator(model, stop_tokens=set(), rows=2, capacity=64, prefill_step_size=4,
                               prefill_per_step=2, min_capacity=8, fused=False, lookup_draft=4)
    assert forced.lookup is not None  # --lookup-decoding on runs it anyway
