"""Prefill batching: an idle engine gathers a burst of requests before its first prefill, and a
prefill call of many prompts gets chunks short enough that its positions stay bounded, with the
tokens of a real (tiny) model unchanged."""

from __future__ import annotations

import time

import mlx.core as mx
import pytest
from mlx_lm.generate import BatchGenerator

from serving.backend import burst_prefill_runs
from serving.engine.generator import CHUNK_KEEPING_BATCH, bound_prefill_calls, prefill_chunk

from .fakes import FakeGenerator
from .test_engine_loop import collect, req, start
from .test_lean_step import decode, greedy
from .tiny_llama import tiny_llama


def _submit_spaced(engine, count: int, gap_s: float):
    handles = []
    for i in range(count):
        handles.append(engine.submit(req()))
        if i < count - 1:
            time.sleep(gap_s)
    return handles


def test_a_burst_reaching_an_idle_engine_prefills_as_one_batch():
    gen = FakeGenerator(script=(72, 105, 0))
    engine = start(gen, admission_quiet_s=0.5, admission_window_max_s=5.0)
    handles = _submit_spaced(engine, 3, 0.05)
    for h in handles:
        collect(h)
    engine.stop()
    assert sorted(gen.batches[0]) == [0, 1, 2]


def test_health_shows_the_admission_settings():
    engine = start(FakeGenerator(), admission_quiet_s=0.01, prefill_batch_size=32)
    assert engine.stats()["admission"] == {"prefill_batch_size": 32, "quiet_ms": 10.0, "window_max_ms": 100.0}
    engine.stop()


def test_the_gathering_stops_at_its_cap():
    gen = FakeGenerator(script=(72, 105, 0))
    engine = start(gen, admission_quiet_s=0.5, admission_window_max_s=0.2)
    handles = _submit_spaced(engine, 8, 0.1)  # arrivals keep coming for 0.7 s
    for h in handles:
        collect(h)
    engine.stop()
    assert 0 in gen.batches[0] and 7 not in gen.batches[0]


def test_without_a_quiet_time_the_first_request_does_not_wait():
    gen = FakeGenerator(script=(72, 105, 0))
    engine = start(gen, admission_quiet_s=0.0)
    first = engine.submit(req())
    deadline = time.monotonic() + 5
    while not gen.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    second = engine.submit(req())
    collect(first), collect(second)
    engine.stop()
    assert gen.batches[0] == (0,)


@pytest.mark.parametrize("policy,backend,one_by_one,runs", [
    ("auto", "cpu", False, True), ("auto", "cuda", False, False), ("auto", "metal", False, False),
    ("on", "cuda", False, True), ("off", "cpu", False, False), ("auto", "cpu", True, False), ("on", "cpu", True, False),
])
def test_where_burst_prefill_runs(policy, backend, one_by_one, runs):
    assert burst_prefill_runs(policy, backend, one_by_one=one_by_one) is runs


@pytest.mark.parametrize("flags,backend,batch,quiet_ms", [
    ({}, "cpu", 32, 10.0),
    ({"max_concurrency": 12, "admission_quiet_ms": 25}, "cpu", 12, 25.0),
    ({}, "cuda", 8, 0.0),
    ({"burst_prefill": "on", "prefill_batch_size": 4, "decode_step": "batch"}, "cuda", 32, 10.0),
    ({"burst_prefill": "on", "prefill_batch_size": 4}, "cuda", 4, 0.0),  # auto: compiled, prompts one by one
    ({"burst_prefill": "off", "prefill_batch_size": 4}, "cpu", 4, 0.0),
    ({"decode_step": "compiled"}, "cpu", 8, 0.0),
    ({"batch_invariant": True, "prefix_cache_bytes": 0}, "cpu", 8, 0.0),
])
def test_the_server_resolves_its_admission_by_backend_and_step(flags, backend, batch, quiet_ms):
    from serving.app import engine_settings
    from serving.config import build_config

    settings = engine_settings(build_config(flags), backend)
    assert (settings.prefill_batch_size, settings.admission_quiet_s * 1000) == (batch, quiet_ms)


@pytest.mark.parametrize("prompts,chunk", [(1, 512), (8, 512), (9, 455), (16, 256), (32, 128), (10_000, 1)])
def test_a_prefill_calls_positions_stay_within_eight_whole_chunks(prompts, chunk):
    assert prefill_chunk(prompts, step=512) == chunk
    assert prompts * prefill_chunk(prompts, step=512) <= max(prompts, CHUNK_KEEPING_BATCH * 512)


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=31)


def _generator(model, *, prefill_batch_size):
    return BatchGenerator(model, stop_tokens=[], completion_batch_size=16, prefill_batch_size=prefill_batch_size,
                          prefill_step_size=8, stream=mx.default_stream(mx.default_device()))


def test_bounded_calls_give_the_same_tokens_with_shorter_chunks(model, monkeypatch):
    prompts = [[3 + i, 9, 13 + i, 5] for i in range(11)] + [[7 + (j % 5) for j in range(40)]]
    plain = decode(_generator(model, prefill_batch_size=16), prompts, samplers=greedy(len(prompts)), max_tokens=12)
    shapes, plain_call = [], type(model).__call__

    def spy(self, inputs, *args, **kwargs):
        shapes.append(tuple(inputs.shape))
        return plain_call(self, inputs, *args, **kwargs)

    monkeypatch.setattr(type(model), "__call__", spy)
    bounded = _generator(model, prefill_batch_size=16)
    bound_prefill_calls(bounded)
    got = decode(bounded, prompts, samplers=greedy(len(prompts)), max_tokens=12)
    assert got == plain
    prefill = [s for s in shapes if len(s) == 2 and s[1] > 1]
    # unbounded, the first call would hold 12 prompts x 8 positions
    assert prefill and max(rows * width for rows, width in prefill) <= CHUNK_KEEPING_BATCH * 8
