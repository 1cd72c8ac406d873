"""The lean batch step on a tiny random llama built in-process: it must give mlx-lm's own
BatchGenerator's tokens, finish reasons, log-probabilities and caches, greedy or sampled, with
processors or without, while really running its own step (the fused forward, no eager
log-softmax)."""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import make_logits_processors

from serving.engine.generator import make_batch_generator
from serving.engine.lean_step import install_lean_step, lean_batch_class
from serving.engine.loop import EngineSettings
from serving.engine.request import SamplingParams
from serving.engine.sampling import build_sampler

from .tiny_llama import tiny_llama

PROMPTS = [[5, 9, 13, 5, 9], [7] * 21, [1, 2, 3, 4, 1, 2, 3, 4, 1, 2], [42, 43], [60, 61, 62]]


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=23)


def _generators(model, stop=()):
    kwargs = dict(stop_tokens=[[t] for t in stop], completion_batch_size=4, prefill_batch_size=2,
                  prefill_step_size=8, stream=mx.default_stream(mx.default_device()))
    lean = BatchGenerator(model, **kwargs)
    install_lean_step(lean, model)
    return BatchGenerator(model, **kwargs), lean


def greedy(n):
    return [build_sampler(SamplingParams(temperature=0.0)) for _ in range(n)]


def seeded(n, seed=5):
    return [build_sampler(SamplingParams(temperature=0.9, seed=seed + i)) for i in range(n)]


def decode(gen, prompts, *, samplers, max_tokens=20, logits_processors=None, read_logprobs=False):
    """Per prompt: its tokens, finish, cache length, all tokens and (if read) each step's logprobs."""
    uids = gen.insert(prompts, max_tokens=[max_tokens] * len(prompts), samplers=samplers,
                      **({"logits_processors": logits_processors} if logits_processors else {}))
    out = {u: {"tokens": [], "finish": None, "cache_len": None, "all_tokens": None, "logprobs": []} for u in uids}
    for _ in range(500):
        _, responses = gen.next()
        for r in responses:
            seq = out[r.uid]
            seq["tokens"].append(r.token)
            if read_logprobs:
                seq["logprobs"].append(r.logprobs.tolist())
            if r.finish_reason:
                seq["finish"], seq["all_tokens"] = r.finish_reason, list(r.all_tokens)
                seq["cache_len"] = r.prompt_cache[0].offset
        if all(s["finish"] for s in out.values()):
            break
    return [out[u] for u in uids]


def test_greedy_batches_give_batchgenerators_tokens_through_the_fused_forward(model):
    ref, lean = _generators(model)
    assert type(lean._generation_batch) is lean_batch_class() and lean._generation_batch.fused is not None
    calls = []
    fused = lean._generation_batch.fused
    lean._generation_batch.fused = lambda *a: calls.append(1) or fused(*a)
    want = decode(ref, PROMPTS, samplers=greedy(len(PROMPTS)))
    got = decode(lean, PROMPTS, samplers=greedy(len(PROMPTS)))
    assert got == want
    assert calls, "the lean step never ran the fused forward"


def test_a_stop_token_and_sequences_joining_midway_finish_alike(model):
    ref, lean = _generators(model)
    stop_token = decode(ref, [PROMPTS[0]], samplers=greedy(1))[0]["tokens"][6]
    ref, lean = _generators(model, stop=(stop_token,))
    want, got = [], []
    for gen, sink in ((ref, want), (lean, got)):
        uid = gen.insert([PROMPTS[0]], max_tokens=[30], samplers=greedy(1))[0]
        tokens = {uid: []}
        for step in range(200):
            if step == 3:  # a second and third sequence join one already decoding
                for u in gen.insert(PROMPTS[1:3], max_tokens=[9, 30], samplers=greedy(2)):
                    tokens[u] = []
            for r in gen.next()[1]:
                tokens[r.uid].append((r.token, r.finish_reason))
            if len(tokens) == 3 and all(t and t[-1][1] for t in tokens.values()):
                break
        sink.extend(tokens.values())
    assert got == want
    assert want[0][-1] == (stop_token, "stop")


def test_log_probabilities_are_the_same_numbers_when_read(model):
    ref, lean = _generators(model)
    want = decode(ref, PROMPTS[:3], samplers=greedy(3), read_logprobs=True)
    got = decode(lean, PROMPTS[:3], samplers=greedy(3), read_logprobs=True)
    assert [g["logprobs"] for g in got] == [w["logprobs"] for w in want]


def test_sampled_and_processed_rows_sample_from_the_same_distribution(model):
    ref, lean = _generators(model)
    penalties = [make_logits_processors(repetition_penalty=1.3, repetition_context_size=50), None,
                 make_logits_processors(logit_bias={3: 4.0})]
    samplers = [seeded(1, 1)[0], greedy(1)[0], seeded(1, 9)[0]]
    want = decode(ref, PROMPTS[:3], samplers=samplers, logits_processors=penalties)
    samplers = [seeded(1, 1)[0], greedy(1)[0], seeded(1, 9)[0]]  # fresh keys: the same draws again
    got = decode(lean, PROMPTS[:3], samplers=samplers, logits_processors=penalties)
    assert got == want


def test_the_lean_step_is_installed_on_empty_generators_only(model):
    _, lean = _generators(model)
    lean.insert([PROMPTS[0]], max_tokens=[4], samplers=greedy(1))
    lean.next()
    with pytest.raises(RuntimeError, match="empty generator"):
        install_lean_step(lean, model)


def test_engine_settings_choose_the_step(model):
    kw = dict(max_concurrency=2, lookup_draft=0)
    on = make_batch_generator(model, _Tok(), EngineSettings(**kw))
    off = make_batch_generator(model, _Tok(), EngineSettings(lean_step=False, **kw))
    assert type(on._generation_batch) is lean_batch_class()
    assert type(off._generation_batch) is not lean_batch_class()


def test_fusing_shares_the_weights_instead_of_copying_them():
    import gc

    from serving.engine.fused_decode import FusedDecoder

    model = tiny_llama(seed=4)
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    before = [p.weight.tolist() for p in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj)]
    gc.collect()
    active = mx.get_active_memory()
    fused = FusedDecoder.build(model)
    gc.collect()
    fused_bytes = sum(layer.qkv.nbytes + layer.gate_up.nbytes for layer in fused._layers)
    assert mx.get_active_memory() - active < fused_bytes / 4  # the originals were freed, not kept beside
    after = [p.weight.tolist() for p in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj)]
    assert after == before


class _Tok:
    eos_token_ids = {0}


@pytest.mark.skipif(mx.default_device() != mx.cpu, reason="a GPU's rope kernel computes each angle itself")
@pytest.mark.parametrize("offset", [7, [3, 0, 12]])
@pytest.mark.parametrize("n", [1, 3])
def test_one_rotation_per_step_is_the_ropes_own_numbers(offset, n):
    """engine.fused_decode makes RoPE's cosines and sines once per step (Rotation) instead of once
    per layer for q and for k; rotating by them gives the rope's own numbers, bit for bit."""
    import mlx.nn as nn

    from serving.engine.fused_decode import Rotation, rotate, shares_rotation

    rope = nn.RoPE(16, base=10000.0)
    offset = mx.array(offset) if isinstance(offset, list) else offset
    rows, heads, kv_heads = 3, 4, 2
    rotation = Rotation.of(rope, offset, rows=rows, n=n, heads=heads, kv_heads=kv_heads, dtype=mx.float32)
    for x, (cos, sin) in ((mx.random.normal((rows, heads, n, 16), key=mx.random.key(1)), rotation.q),
                          (mx.random.normal((rows, kv_heads, n, 16), key=mx.random.key(2)), rotation.k)):
        assert mx.array_equal(rotate(x, cos, sin), rope(x, offset=offset)).item()
    assert shares_rotation(rope, 16)
    assert not shares_rotation(nn.RoPE(16, traditional=True), 16)  # interleaved halves: not this layout
    assert not shares_rotation(nn.RoPE(8), 16)  # part of each head rotated
