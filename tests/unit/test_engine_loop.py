"""The engine loop against a fake batch generator: admission, cancel, stop strings,
step failure and recovery, timeouts, the bounded queue and a dying thread."""

from __future__ import annotations

import time

import pytest

from serving.engine.loop import Engine, EngineSettings
from serving.engine.prefix_cache import PrefixCache
from serving.engine.request import EngineBusy, EngineDown, Finished, GenerationRequest, StepOutput

from .fakes import FakeCacheLayer, FakeGenerator, FakeTokenizer


class FakeStore:
    """LRUPromptCache's contract, enough for the loop: longest stored prefix wins."""

    def __init__(self, max_bytes):
        self.entries = {}

    def fetch_nearest_cache(self, model, tokens):
        def common(key):
            n = 0
            while n < min(len(key), len(tokens) - 1) and key[n] == tokens[n]:
                n += 1
            return n

        best = max((common(k) for k in self.entries), default=0)
        if not best:
            return None, tokens
        return [FakeCacheLayer(best)], tokens[best:]

    def insert_cache(self, model, tokens, cache):
        self.entries[tuple(tokens)] = cache

    @property
    def nbytes(self):
        return sum(c.nbytes for cache in self.entries.values() for c in cache)

    def __len__(self):
        return len(self.entries)


def start(gen: FakeGenerator, *, cache_bytes=0, **settings) -> Engine:
    engine = Engine(lambda: (None, FakeTokenizer()), EngineSettings(prefix_cache_bytes=cache_bytes, **settings),
                    generator_factory=lambda model, tok, s: gen,
                    prefix_cache=PrefixCache(cache_bytes, store_factory=FakeStore, trim=lambda c, n: True))
    engine.start(timeout_s=5)
    return engine


def collect(handle, timeout_s=5.0):
    events, t0 = [], time.monotonic()
    for event in handle.iter_events(poll_s=0.02):
        events.append(event)
        assert time.monotonic() - t0 < timeout_s
    return events


def req(prompt=(1, 2, 3), max_tokens=10, **kw) -> GenerationRequest:
    return GenerationRequest(list(prompt), max_tokens, **kw)


def text_of(events):
    return "".join(e.text for e in events if isinstance(e, StepOutput))


def test_generates_text_then_eos_with_usage():
    engine = start(FakeGenerator(script=(72, 105, 0)))
    events = collect(engine.submit(req()))
    assert text_of(events) == "Hi"
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason == "eos"
    assert (fin.usage.prompt_tokens, fin.usage.completion_tokens, fin.usage.cached_tokens) == (3, 3, 0)
    # the EOS token is counted, neither shown nor listed
    assert [t for e in events if isinstance(e, StepOutput) for t in e.token_ids] == [72, 105]
    engine.stop()


def test_length_and_logprobs_top_k():
    engine = start(FakeGenerator(script=(65, 66, 67, 68)))
    events = collect(engine.submit(req(max_tokens=2, logprobs=3)))
    assert events[-1].reason == "length"
    lps = [lp for e in events if isinstance(e, StepOutput) for lp in e.logprobs]
    assert [lp.token for lp in lps] == [65, 66]
    assert lps[0].top[0][0] == 65 and len(lps[0].top) == 3
    assert lps[0].logprob == pytest.approx(-0.6931, abs=1e-3)
    engine.stop()


def test_stop_string_ends_and_is_reported_and_removed_from_batch():
    gen = FakeGenerator(script=(ord("a"), ord("b"), ord("X"), ord("c"), ord("d")))
    engine = start(gen)
    events = collect(engine.submit(req(stop=("Xc",))))
    assert text_of(events) == "ab"
    assert events[-1].reason == "stop" and events[-1].stop_string == "Xc"
    assert gen.removed  # taken out of the running batch
    engine.stop()


def test_cancel_removes_the_sequence():
    gen = FakeGenerator(never_finish=True)
    engine = start(gen)
    handle = engine.submit(req(max_tokens=10_000))
    next(iter(handle.iter_events(poll_s=0.02)))
    handle.cancel()
    deadline = time.monotonic() + 2
    while not gen.removed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gen.removed
    engine.stop()


def test_step_failure_fails_only_running_requests_and_engine_recovers():
    gens = [FakeGenerator(never_finish=True, fail_on_step=3), FakeGenerator(script=(79, 75, 0))]
    engine = Engine(lambda: (None, FakeTokenizer()), EngineSettings(prefix_cache_bytes=0),
                    generator_factory=lambda *a: gens.pop(0))
    engine.start(timeout_s=5)
    failed = collect(engine.submit(req(max_tokens=100)))
    assert failed[-1].reason == "error" and "planted step failure" in failed[-1].error
    ok = collect(engine.submit(req()))
    assert text_of(ok) == "OK" and ok[-1].reason == "eos"
    assert engine.stats()["step_failures"] == 1 and engine.alive
    engine.stop()


def test_admission_failure_fails_only_that_request():
    engine = start(FakeGenerator(script=(79, 0)))
    bad = collect(engine.submit(req(prompt=())))  # the generator refuses an empty prompt
    assert bad[-1].reason == "error" and "admission failed" in bad[-1].error
    assert text_of(collect(engine.submit(req()))) == "O"
    engine.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_engine_answers_waiting_and_new_requests_within_a_second():
    engine = start(FakeGenerator(never_finish=True, die_on_step=5))
    handle = engine.submit(req(max_tokens=10_000))
    t0 = time.monotonic()
    events = collect(handle)
    assert events[-1].reason == "error" and "engine stopped" in events[-1].error
    assert time.monotonic() - t0 < 1.0
    assert not engine.alive
    with pytest.raises(EngineDown):
        engine.submit(req())


def test_queue_full_refuses_with_engine_busy():
    engine = start(FakeGenerator(never_finish=True), max_concurrency=1, max_queue=1)
    first = engine.submit(req(max_tokens=10_000))
    next(iter(first.iter_events(poll_s=0.02)))  # decoding now
    engine.submit(req(max_tokens=10_000))  # waits
    with pytest.raises(EngineBusy):
        engine.submit(req())
    stats = engine.stats()
    assert (stats["decoding"], stats["waiting"], stats["rejected_busy"]) == (1, 1, 1)
    engine.stop()


def test_timeout_finishes_running_and_waiting_requests():
    engine = start(FakeGenerator(never_finish=True, step_s=0.005), max_concurrency=1)
    running = engine.submit(req(max_tokens=10_000, timeout_s=0.3))
    waiting = engine.submit(req(max_tokens=10_000, timeout_s=0.2))
    assert collect(running)[-1].reason == "timeout"
    assert collect(waiting)[-1].reason == "timeout"
    assert engine.stats()["timeouts"] == 2
    engine.stop()


def test_prefix_cache_hit_reuses_the_stored_prefix():
    gen = FakeGenerator(script=(72, 0))
    engine = start(gen, cache_bytes=1 << 20)
    first = collect(engine.submit(req(prompt=(5, 6, 7, 8))))
    assert first[-1].usage.cached_tokens == 0
    second = collect(engine.submit(req(prompt=(5, 6, 7, 8, 72, 9, 10))))
    # the first sequence's prompt and answer (5 6 7 8 72 0) were stored; 5 of them match
    assert second[-1].usage.cached_tokens == 5
    assert gen.inserted[-1]["prompt"] == [9, 10] and gen.inserted[-1]["all_tokens"] == [5, 6, 7, 8, 72]
    stats = engine.stats()["prefix_cache"]
    assert stats["hit_tokens"] == 5 and stats["hits"] == 1 and stats["entries"] >= 1
    engine.stop()


def test_packed_weights_need_the_shim_in_the_process():
    """The test process has MLX's own BLAS, not the preloaded shim: nothing is packed, and the
    engine says why; off says so too."""
    import mlx.nn as nn

    from serving.engine.packed_weights import pack_exact_weights

    model = nn.Linear(64, 32)
    assert pack_exact_weights(model, policy="auto").note.startswith("no cblas shim")
    off = pack_exact_weights(model, policy="off")
    assert (off.packed, off.note) == (0, "--packed-weights off")


def test_packing_offers_fused_weights_before_their_row_slices():
    """The shim finds a row slice inside a weight packed before it, so the fused weights (which the
    model's own q, k, v, gate and up are slices of) must be offered first: largest first."""
    from serving.engine.fused_decode import FusedDecoder
    from serving.engine.packed_weights import weight_matrices

    from .tiny_llama import tiny_llama

    model = tiny_llama(seed=3)
    decoder = FusedDecoder.build(model)
    matrices = weight_matrices(model, decoder.weights())
    sizes = [m.size for m in matrices]
    assert sizes == sorted(sizes, reverse=True)
    assert {id(w) for w in decoder.weights()} <= {id(m) for m in matrices}  # and a slice is smaller
    assert all(m.ndim == 2 and m.shape[1] % 32 == 0 for m in matrices)
