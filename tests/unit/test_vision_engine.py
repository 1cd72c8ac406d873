"""The vision engine's contract with fake steps: the text engine's events, limits, cancellation and failures."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from serving.engine.loop import EngineSettings
from serving.engine.request import EngineBusy, EngineDown, Finished, GenerationRequest, SamplingParams, StepOutput
from serving.vision.engine import VisionEngine

from .fakes import FakeTokenizer

EOS = 0
FLAT = np.log(np.full(256, 1 / 256, dtype=np.float32))


def scripted(*tokens, gate: threading.Event | None = None, delay_s: float = 0.0, fail_at: int | None = None,
             forever: bool = False):
    """Steps that yield `tokens` (then keep yielding 'x' when `forever`), optionally waiting on `gate` first."""
    seen = []

    def steps(model, request, settings):
        seen.append(request)
        if gate is not None:
            gate.wait(5)
        i = 0
        while True:
            if i < len(tokens):
                token = tokens[i]
            elif forever:
                token = ord("x")
            else:
                return
            if fail_at is not None and i == fail_at:
                raise RuntimeError("step exploded")
            if delay_s:
                time.sleep(delay_s)
            yield token, FLAT
            i += 1

    steps.seen = seen
    return steps


def engine_with(steps, **settings) -> VisionEngine:
    engine = VisionEngine(lambda: ("model", FakeTokenizer(), "prompter"), EngineSettings(**settings), steps=steps)
    engine.start(timeout_s=5)
    return engine


def request(max_tokens=10, **kw) -> GenerationRequest:
    return GenerationRequest(prompt_tokens=[5, 6, 7], max_tokens=max_tokens, **kw)


def events(handle) -> list:
    return list(handle.iter_events(poll_s=0.05))


def text_of(evs) -> str:
    return "".join(e.text for e in evs if isinstance(e, StepOutput))


@pytest.fixture
def stopping():
    made = []
    yield made.append
    for engine in made:
        engine.stop()


def test_tokens_then_eos_give_the_text_engines_events(stopping):
    engine = engine_with(scripted(ord("H"), ord("i"), EOS))
    stopping(engine)
    evs = events(engine.submit(request()))
    assert [e.token_ids for e in evs[:-1]] == [(ord("H"),), (ord("i"),)]
    assert text_of(evs) == "Hi"
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.reason == "eos"
    assert (fin.usage.prompt_tokens, fin.usage.completion_tokens) == (3, 3)  # the EOS token counts, unshown
    assert engine.tokenizer is not None and engine.vision == "prompter"


def test_max_tokens_ends_with_length(stopping):
    engine = engine_with(scripted(forever=True))
    stopping(engine)
    evs = events(engine.submit(request(max_tokens=4)))
    assert text_of(evs) == "xxxx" and evs[-1].reason == "length" and evs[-1].usage.completion_tokens == 4


def test_stop_strings_cut_the_text(stopping):
    engine = engine_with(scripted(*map(ord, "one. two"), EOS))
    stopping(engine)
    evs = events(engine.submit(request(stop=(". ",))))
    assert text_of(evs) == "one" and evs[-1].reason == "stop" and evs[-1].stop_string == ". "


def test_logprobs_come_with_each_token(stopping):
    engine = engine_with(scripted(ord("a"), EOS))
    stopping(engine)
    evs = events(engine.submit(request(logprobs=2)))
    lp = evs[0].logprobs[0]
    assert lp.token == ord("a") and len(lp.top) == 2 and lp.logprob == pytest.approx(float(FLAT[0]))


def test_the_steps_get_the_whole_request_with_its_media(stopping):
    steps = scripted(EOS)
    engine = engine_with(steps)
    stopping(engine)
    req = request(sampling=SamplingParams(temperature=0.7, seed=3), media="pixels")
    events(engine.submit(req))
    assert steps.seen == [req]


def test_cancel_stops_generation_between_tokens(stopping):
    engine = engine_with(scripted(forever=True, delay_s=0.01))
    stopping(engine)
    handle = engine.submit(request(max_tokens=100_000))
    first = handle.events.get(timeout=5)
    assert isinstance(first[0], StepOutput)
    handle.cancel()
    evs = events(handle)
    assert evs[-1].reason == "cancelled" and evs[-1].usage.completion_tokens < 100_000
    assert engine.stats()["cancelled"] == 1


def test_a_request_over_its_time_limit_ends_with_timeout(stopping):
    engine = engine_with(scripted(forever=True, delay_s=0.01))
    stopping(engine)
    evs = events(engine.submit(request(max_tokens=100_000, timeout_s=0.2)))
    assert evs[-1].reason == "timeout" and "exceeded" in evs[-1].error
    assert engine.stats()["timeouts"] == 1


def test_a_failing_request_fails_alone(stopping):
    engine = engine_with(scripted(ord("a"), ord("b"), fail_at=1))
    stopping(engine)
    evs = events(engine.submit(request()))
    assert evs[-1].reason == "error" and "step exploded" in evs[-1].error
    assert engine.alive
    second = events(engine.submit(request(max_tokens=1)))
    assert second[-1].reason == "length"


def test_requests_queue_and_a_full_queue_is_busy(stopping):
    gate = threading.Event()
    engine = engine_with(scripted(ord("a"), EOS, gate=gate), max_queue=1)
    stopping(engine)
    first = engine.submit(request())
    deadline = time.monotonic() + 5
    while engine.stats()["decoding"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = engine.submit(request())
    with pytest.raises(EngineBusy):
        engine.submit(request())
    assert engine.stats()["waiting"] == 1
    gate.set()
    assert events(first)[-1].reason == "eos" and events(second)[-1].reason == "eos"


def test_a_request_cancelled_while_waiting_never_runs(stopping):
    gate = threading.Event()
    steps = scripted(EOS, gate=gate)
    engine = engine_with(steps)
    stopping(engine)
    first = engine.submit(request())
    waiting = engine.submit(request())
    waiting.cancel()
    gate.set()
    assert events(first)[-1].reason == "eos"
    assert events(waiting)[-1].reason == "cancelled"
    assert len(steps.seen) == 1


def test_stopping_fails_what_waits_and_refuses_new_work():
    gate = threading.Event()
    engine = engine_with(scripted(EOS, gate=gate))
    engine.submit(request())
    waiting = engine.submit(request())
    engine._stopping.set()
    gate.set()
    engine.stop()
    last = events(waiting)[-1]
    assert last.reason == "error" and "shutting down" in last.error
    with pytest.raises(EngineDown):
        engine.submit(request())


def test_a_load_failure_surfaces_at_start():
    def broken():
        raise FileNotFoundError("no weights")

    engine = VisionEngine(broken, EngineSettings(), steps=scripted())
    with pytest.raises(RuntimeError, match="no weights"):
        engine.start(timeout_s=5)


def test_stats_have_the_text_engines_keys(stopping):
    engine = engine_with(scripted(EOS))
    stopping(engine)
    stats = engine.stats()
    assert stats["mode"] == "vision-serial" and stats["alive"] and stats["vision"]
    for key in ("decoding", "waiting", "queue_depth", "max_concurrency", "max_queue", "prefix_cache", "requests",
                "generated_tokens", "errors", "rejected_busy", "timeouts"):
        assert key in stats
