import mlx.core as mx
import pytest

from serving.engine.request import SamplingParams
from serving.engine.sampling import build_logits_processors, build_sampler

LOGPROBS = mx.log(mx.softmax(mx.array([[1.0, 3.0, 2.0, 0.5]]), axis=-1))


def draws(params, n=30):
    sampler = build_sampler(params)
    return [sampler(LOGPROBS).item() for _ in range(n)]


def test_zero_temperature_is_argmax():
    assert set(draws(SamplingParams(temperature=0.0))) == {1}


def test_seeded_sampler_repeats_and_differs_by_seed():
    a = draws(SamplingParams(temperature=1.5, seed=7))
    assert a == draws(SamplingParams(temperature=1.5, seed=7))
    assert a != draws(SamplingParams(temperature=1.5, seed=8))
    assert len(set(a)) > 1


def test_seeded_sampler_ignores_global_random_state():
    params = SamplingParams(temperature=1.0, seed=3)
    mx.random.seed(0)
    a = draws(params)
    mx.random.seed(99)
    assert a == draws(params)


def test_top_k_one_is_greedy_even_when_hot():
    assert set(draws(SamplingParams(temperature=2.0, top_k=1, seed=1))) == {1}


def test_penalties_and_bias_follow_openai_semantics():
    # mlx-lm's processors update logits in place, so each call gets fresh ones.
    context = mx.array([2, 2, 3])
    (proc,) = build_logits_processors(SamplingParams(frequency_penalty=0.5), context_size=64)
    # frequency: minus 0.5 per occurrence
    assert proc(context, mx.zeros((1, 4))).tolist()[0] == [0.0, 0.0, -1.0, -0.5]
    (proc,) = build_logits_processors(SamplingParams(presence_penalty=0.5), context_size=64)
    assert proc(context, mx.zeros((1, 4))).tolist()[0] == [0.0, 0.0, -0.5, -0.5]
    (proc,) = build_logits_processors(SamplingParams(logit_bias={0: 5.0}), context_size=64)
    assert proc(context, mx.zeros((1, 4))).tolist()[0] == [5.0, 0.0, 0.0, 0.0]
    assert build_logits_processors(SamplingParams(), context_size=64) == []


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_logprobs_are_read_from_every_weight_dtype(dtype):
    # A bf16 model's distribution is a bf16 mx.array, which numpy cannot view directly.
    import mlx.core as mx

    from serving.engine.logprobs import token_logprob

    dist = mx.log(mx.softmax(mx.array([1.0, 3.0, 2.0, 0.5]), axis=-1)).astype(getattr(mx, dtype))
    got = token_logprob(dist, 1, top_k=2)
    assert got.token == 1 and [t for t, _ in got.top] == [1, 2]
    assert abs(got.logprob - (-0.46)) < 0.02
