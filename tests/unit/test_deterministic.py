"""--deterministic: serial admission in the engine (one sequence per step, start to finish),
no prefix cache, and temperature > 0 refused at the API; the config, CLI and profile."""

from __future__ import annotations

import pytest
from falcon import testing

from serving.app import create_app, engine_settings
from serving.cli import main as cli_main
from serving.config import ServerConfig, build_config, profile_flags
from serving.engine.loop import Engine, EngineSettings
from serving.engine.prefix_cache import PrefixCache
from serving.engine.request import StepOutput

from .fakes import FakeEngine, FakeGenerator, FakeTokenizer, served
from .test_engine_loop import FakeStore, collect, req

HI = [{"role": "user", "content": "hi"}]


def engine_with(gen: FakeGenerator, **settings) -> Engine:
    engine = Engine(lambda: (None, FakeTokenizer()), EngineSettings(**settings),
                    generator_factory=lambda *a: gen,
                    prefix_cache=PrefixCache(1 << 20, store_factory=FakeStore, trim=lambda c, n: True))
    engine.start(timeout_s=5)
    return engine


def run_concurrently(engine, requests):
    handles = [engine.submit(r) for r in requests]
    return [collect(h) for h in handles]


def tokens_of(events):
    return [t for e in events if isinstance(e, StepOutput) for t in e.token_ids]


def test_deterministic_engine_decodes_one_sequence_per_step_though_eight_may_batch():
    gen = FakeGenerator(script=(65, 66, 67, 68, 69, 0), step_s=0.001)
    engine = engine_with(gen, deterministic=True, max_concurrency=8)
    results = run_concurrently(engine, [req(max_tokens=4) for _ in range(5)])
    assert all(r[-1].reason == "length" and tokens_of(r) == [65, 66, 67, 68] for r in results)
    assert len(gen.batches) == 5 * 4
    assert max(len(b) for b in gen.batches) == 1
    # each sequence runs start to finish before the next one's first step
    order = [b[0] for b in gen.batches]
    assert order == sorted(order)
    stats = engine.stats()
    assert stats["mode"] == "serial-greedy" and stats["serial_decoding"] and stats["serial_reason"] == "deterministic"
    assert stats["peak_decoding"] == 1
    engine.stop()


def test_the_same_load_without_deterministic_does_share_steps():
    """The check above can fail: the default engine batches these very requests."""
    gen = FakeGenerator(script=(65, 66, 67, 68, 69, 0), step_s=0.001)
    engine = engine_with(gen, max_concurrency=8)
    run_concurrently(engine, [req(max_tokens=4) for _ in range(5)])
    assert max(len(b) for b in gen.batches) > 1
    assert not engine.stats()["serial_decoding"]
    engine.stop()


def test_a_request_arriving_mid_decode_waits_for_the_whole_of_the_first():
    gen = FakeGenerator(never_finish=True, step_s=0.005)
    engine = engine_with(gen, deterministic=True, max_concurrency=8)
    first = engine.submit(req(max_tokens=30))
    events = first.iter_events(poll_s=0.02)
    got = [next(events)]  # the first token is out: the seed fork's lock was released here
    steps_when_second_came = len(gen.batches)
    second = engine.submit(req(max_tokens=5))
    got += list(events)
    later = collect(second)
    assert got[-1].reason == "length" and later[-1].reason == "length"
    a, b = gen.inserted[0]["uid"], gen.inserted[1]["uid"]
    a_steps = [i for i, batch in enumerate(gen.batches) if a in batch]
    b_steps = [i for i, batch in enumerate(gen.batches) if b in batch]
    assert max(a_steps) >= steps_when_second_came  # the first was still decoding when the second arrived
    assert min(b_steps) > max(a_steps)
    assert all(len(batch) == 1 for batch in gen.batches)
    engine.stop()


def test_deterministic_engine_keeps_the_prefix_cache_off_even_when_one_is_given():
    gen = FakeGenerator(script=(72, 0))
    engine = engine_with(gen, deterministic=True)
    collect(engine.submit(req(prompt=(5, 6, 7, 8))))
    again = collect(engine.submit(req(prompt=(5, 6, 7, 8, 72, 9))))
    assert again[-1].usage.cached_tokens == 0
    assert gen.inserted[-1]["prompt"] == [5, 6, 7, 8, 72, 9] and gen.inserted[-1]["cache"] is None
    assert engine.stats()["prefix_cache"]["enabled"] is False
    engine.stop()


# ---- configuration -------------------------------------------------------------------------

def test_deterministic_implies_no_prefix_cache_and_refuses_conflicting_settings():
    cfg = build_config({"deterministic": True})
    assert cfg.deterministic and cfg.prefix_cache_bytes == 0 and cfg.default_temperature == 0
    assert engine_settings(cfg, "cpu").deterministic
    with pytest.raises(ValueError, match="prefix cache"):
        build_config({"deterministic": True, "prefix_cache_bytes": 1024})
    with pytest.raises(ValueError, match="temperature"):
        build_config({"deterministic": True, "default_temperature": 0.7})


def test_the_text_deterministic_profile_and_the_cli_flag(monkeypatch):
    assert profile_flags("text-deterministic")["deterministic"] is True
    cfg = build_config({"profile": "text-deterministic"})
    assert cfg.deterministic and cfg.prefix_cache_bytes == 0
    seen = {}
    import serving.app
    monkeypatch.setattr(serving.app, "serve", lambda config: seen.setdefault("config", config))
    # --blas reference and --malloc system: nothing to preload, so no re-exec replaces this process
    assert cli_main(["serve", "--deterministic", "--blas", "reference", "--malloc", "system"]) == 0
    assert seen["config"].deterministic and seen["config"].prefix_cache_bytes == 0
    assert cli_main(["serve", "--deterministic", "--prefix-cache-bytes", "99", "--blas", "reference",
                     "--malloc", "system"]) == 2


# ---- the API: greedy only ------------------------------------------------------------------

def client(engine=None, **cfg):
    config = ServerConfig(deterministic=True, prefix_cache_bytes=0, **cfg)
    return testing.TestClient(create_app(config, engine or FakeEngine(), served(), {}))


@pytest.mark.parametrize("route, body, shape", [
    ("/v1/chat/completions", {"messages": HI, "temperature": 0.7}, "openai"),
    ("/v1/completions", {"prompt": "x", "temperature": 1.0}, "openai"),
    ("/v1/responses", {"input": "hi", "temperature": 0.2}, "openai"),
    ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": HI, "temperature": 0.5}, "anthropic"),
])
def test_temperature_above_zero_is_a_clear_400_in_each_dialect(route, body, shape):
    engine = FakeEngine()
    result = client(engine).simulate_post(route, json=body)
    assert result.status_code == 400
    if shape == "openai":
        err = result.json["error"]
        assert err["param"] == "temperature" and err["code"] == "deterministic_mode"
    else:
        err = result.json["error"]
        assert result.json["type"] == "error" and err["type"] == "invalid_request_error"
    assert "deterministic" in err["message"] and "temperature 0" in err["message"]
    assert engine.requests == []  # refused before reaching the engine


def test_temperature_zero_or_left_out_is_served_greedy():
    engine = FakeEngine()
    c = client(engine)
    assert c.simulate_post("/v1/chat/completions", json={"messages": HI, "temperature": 0}).status_code == 200
    assert c.simulate_post("/v1/chat/completions", json={"messages": HI}).status_code == 200
    assert [r.sampling.temperature for r in engine.requests] == [0.0, 0.0]


def test_health_reports_serial_greedy_mode():
    gen = FakeGenerator(script=(72, 0))
    engine = engine_with(gen, deterministic=True)
    health = client(engine).simulate_get("/health").json
    assert health["engine"]["mode"] == "serial-greedy" and health["engine"]["serial_decoding"] is True
    assert health["config"]["deterministic"] is True and health["config"]["prefix_cache_bytes"] == 0
    engine.stop()
