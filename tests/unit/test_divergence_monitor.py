"""The batch-divergence monitor: token-by-token comparison, probes only beside real traffic,
planted divergence flips it to warning (warn) or to serial decoding (serialize), its status in
/health and /metrics, and the serial re-check."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.config import ServerConfig, build_config
from serving.engine.divergence_monitor import (DEFAULT_PROBE_PROMPT, DivergenceMonitor, MonitorSettings,
                                               ProbeRun, Reference, monitor_settings)
from serving.engine.loop import Engine, EngineSettings

from .fakes import FakeGenerator, FakeTokenizer, served
from .test_engine_loop import collect, req

PROMPT = "probe!"  # the fake tokenizer makes one token per character
PROMPT_IDS = [ord(c) for c in PROMPT]


def dist(**lps) -> np.ndarray:
    """A log-distribution over 256 tokens: the given {token: logprob}, the rest very unlikely."""
    v = np.full(256, -30.0, dtype=np.float32)
    for key, value in lps.items():
        v[int(key[1:])] = value
    return v


# ---- the comparison itself ----------------------------------------------------------------

def test_matching_run_records_the_largest_logprob_drift_and_no_divergence():
    run = ProbeRun("batched", Reference((5, 6, 0), (-0.1, -0.2, -0.3)))
    assert not run.observe(5, dist(t5=-0.1), batch_size=3)
    assert not run.observe(6, dist(t6=-0.25), batch_size=3)
    assert not run.observe(0, dist(t0=-0.3), batch_size=2)
    run.ended()
    s = run.summary()
    assert s["matched"] and s["first_divergent_index"] is None and s["compared_tokens"] == 3
    assert s["max_logprob_delta"] == pytest.approx(0.05, abs=1e-6) and s["max_batch_size"] == 3


def test_divergence_gives_the_first_index_and_the_margin_in_the_batched_distribution():
    run = ProbeRun("batched", Reference((5, 6, 7), (-0.1, -0.6, -0.1)))
    assert not run.observe(5, dist(t5=-0.1), batch_size=2)
    # a near-tie flipped: the batched run prefers 9 over the reference's 6 by 0.02
    assert run.observe(9, dist(t9=-0.68, t6=-0.70), batch_size=2)
    s = run.summary()
    assert not s["matched"] and s["first_divergent_index"] == 1
    assert s["margin"] == pytest.approx(0.02, abs=1e-5)
    assert s["logprob_delta"] == pytest.approx(0.10, abs=1e-5)  # 6 went from -0.6 to -0.7


def test_an_early_or_late_end_of_sequence_is_a_divergence_too():
    early = ProbeRun("batched", Reference((5, 6, 7), (0, 0, 0)))
    early.observe(5, dist(t5=0), batch_size=2)
    early.ended()
    assert early.first_divergence == 1
    late = ProbeRun("batched", Reference((5, 0), (0, 0)))
    late.observe(5, dist(t5=0), batch_size=2)
    late.observe(0, dist(t0=0), batch_size=2)
    assert late.observe(8, dist(t8=0), batch_size=2) and late.first_divergence == 2


def test_monitor_status_counts_and_states():
    now = [100.0]
    mon = DivergenceMonitor(MonitorSettings(action="warn", interval_s=10), clock=lambda: now[0],
                            wall=lambda: 1_700_000_000.0)
    assert mon.status()["status"] == "unknown" and not mon.batched_due()  # no reference yet
    ref = mon.new_run("reference")
    ref.observe(5, dist(t5=-0.1), batch_size=1)
    mon.set_reference(ref)
    assert not mon.batched_due()
    now[0] += 10
    assert mon.batched_due()
    alone = mon.new_run("batched")
    alone.observe(5, dist(t5=-0.1), batch_size=1)
    mon.record(alone)  # decoded alone after all: proves nothing
    assert mon.status()["status"] == "unknown" and mon.inconclusive == 1 and not mon.batched_due()
    now[0] += 10
    good = mon.new_run("batched")
    good.observe(5, dist(t5=-0.1), batch_size=4)
    mon.record(good)
    status = mon.status()
    assert status["status"] == "ok" and status["probes"] == 1 and status["divergences"] == 0
    assert status["last_probe_at"] == "2023-11-14T22:13:20.000Z" and status["last_probe"]["max_batch_size"] == 4
    assert MonitorSettings().action == "off" and DivergenceMonitor(MonitorSettings()).status()["status"] == "off"


# ---- inside the engine, with a fake generator -----------------------------------------------

def monitored(gen: FakeGenerator, action="warn", interval_s=0.02, max_tokens=4, **settings) -> Engine:
    monitor = MonitorSettings(action=action, interval_s=interval_s, prompt=PROMPT, max_tokens=max_tokens)
    engine = Engine(lambda: (None, FakeTokenizer()),
                    EngineSettings(prefix_cache_bytes=0, monitor=monitor, **settings),
                    generator_factory=lambda *a: gen)
    engine.start(timeout_s=5)
    return engine


def probe_uids(gen) -> list[int]:
    return [i["uid"] for i in gen.inserted if i["prompt"] == PROMPT_IDS]


def wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_reference_is_decoded_alone_at_startup_and_no_probe_runs_without_traffic():
    gen = FakeGenerator(script=(72, 105, 33, 0))
    engine = monitored(gen)
    ref = engine.stats()["divergence_monitor"]["reference"]
    assert ref["tokens"] == [72, 105, 33, 0]
    assert gen.inserted[0]["prompt"] == PROMPT_IDS and gen.inserted[0]["cache"] is None
    time.sleep(0.3)  # many intervals pass, with nothing to batch with
    status = engine.stats()["divergence_monitor"]
    assert status["status"] == "unknown" and status["probes"] == 0
    assert probe_uids(gen) == [gen.inserted[0]["uid"]]  # only the reference
    assert engine.stats()["requests"] == 0
    engine.stop()


def test_clean_batching_probes_ok():
    gen = FakeGenerator(never_finish=True, step_s=0.002)
    engine = monitored(gen)
    handle = engine.submit(req(max_tokens=200))
    wait_for(lambda: engine.stats()["divergence_monitor"]["probes"] >= 2)
    status = engine.stats()["divergence_monitor"]
    assert status["status"] == "ok" and status["divergences"] == 0
    assert status["last_probe"]["matched"] and status["last_probe"]["max_batch_size"] == 2
    assert status["first_divergent_index"] is None
    # every probe after the reference shared steps with the request
    user = gen.inserted[1]["uid"]
    for uid in probe_uids(gen)[1:3]:
        assert any(uid in b and user in b for b in gen.batches)
    handle.cancel()
    engine.stop()


def test_planted_divergence_flips_warn_to_warning_and_keeps_batching():
    gen = FakeGenerator(never_finish=True, step_s=0.002, batch_shift=1)
    engine = monitored(gen, action="warn")
    handle = engine.submit(req(max_tokens=300))
    wait_for(lambda: engine.stats()["divergence_monitor"]["divergences"] >= 1)
    stats = engine.stats()
    status = stats["divergence_monitor"]
    assert status["status"] == "warning" and status["reason"] == "batch-divergence"
    assert status["first_divergent_index"] == 0
    # the fake's distribution: log 0.5 for its token, log 1/256 for every other
    assert status["margin"] == pytest.approx(math.log(0.5) - math.log(1 / 256), abs=1e-4)
    assert not stats["serial_decoding"] and not status["serialized"]
    other = engine.submit(req(max_tokens=3))
    collect(other)
    assert any(len(b) > 1 and gen.inserted[-1]["uid"] in b for b in gen.batches)  # still batching
    handle.cancel()
    engine.stop()


def test_planted_divergence_in_serialize_mode_makes_every_later_sequence_decode_alone():
    gen = FakeGenerator(never_finish=True, step_s=0.002, batch_shift=1)
    engine = monitored(gen, action="serialize", max_concurrency=8)
    first = engine.submit(req(max_tokens=60))
    wait_for(lambda: engine.stats()["serial_decoding"])
    tripped_at = len(gen.batches)
    stats = engine.stats()
    assert stats["serial_reason"] == "divergence-monitor" and stats["divergence_monitor"]["serialized"]
    assert stats["divergence_monitor"]["status"] == "warning"
    later = [engine.submit(req(max_tokens=5)) for _ in range(3)]
    assert collect(first)[-1].reason == "length"
    assert all(collect(h)[-1].reason == "length" for h in later)
    after = gen.batches[tripped_at + 1:]
    assert after and all(len(b) == 1 for b in after)
    assert engine.stats()["divergence_monitor"]["probes"] == 1  # no batch to probe any more
    engine.stop()


def test_after_a_divergence_the_reference_is_rechecked_alone_when_idle():
    gen = FakeGenerator(never_finish=True, step_s=0.002, batch_shift=1)
    engine = monitored(gen, action="warn", interval_s=0.01)
    collect(engine.submit(req(max_tokens=20)))
    wait_for(lambda: engine.stats()["divergence_monitor"]["reference"]["rechecks"] >= 1)
    status = engine.stats()["divergence_monitor"]
    assert status["reference"]["mismatches"] == 0 and status["reason"] == "batch-divergence"
    recheck = probe_uids(gen)[-1]
    assert all(b == (recheck,) for b in gen.batches if recheck in b)
    engine.stop()


class DriftingGenerator(FakeGenerator):
    """Decodes the probe differently alone after startup: serial decoding is not reproducible."""

    def next(self):
        if len(self.inserted) > 1:
            self.script = [t + 2 for t in self.script]
        return super().next()


def test_a_recheck_that_misses_the_reference_is_reported_as_serial_nondeterminism():
    gen = DriftingGenerator(script=(72, 105, 33, 46, 0), step_s=0.002, batch_shift=1)
    engine = monitored(gen, action="warn", interval_s=0.001)
    collect(engine.submit(req(max_tokens=10)))
    wait_for(lambda: engine.stats()["divergence_monitor"]["reference"]["rechecks"] >= 1)
    status = engine.stats()["divergence_monitor"]
    assert status["reference"]["mismatches"] == 1 and status["reason"] == "serial-nondeterminism"
    engine.stop()


def test_a_recheck_gives_way_to_a_request_and_never_shares_a_step_with_it():
    gen = FakeGenerator(never_finish=True, step_s=0.01, batch_shift=1)
    engine = monitored(gen, action="warn", interval_s=0.01, max_tokens=150)
    collect(engine.submit(req(max_tokens=3)))
    wait_for(lambda: engine._probes.running_alone)  # the re-check is decoding on the idle engine
    recheck = probe_uids(gen)[-1]
    wait_for(lambda: any(recheck in b for b in gen.batches))
    served_after = collect(engine.submit(req(max_tokens=3)))
    assert served_after[-1].reason == "length"
    assert recheck in gen.removed  # taken out unfinished
    assert all(len(b) == 1 for b in gen.batches if recheck in b)
    assert engine.stats()["divergence_monitor"]["reference"]["rechecks"] == 0  # an aborted one is not counted
    engine.stop()


def test_a_reference_that_cannot_be_decoded_leaves_the_engine_serving():
    class NoPrompt(FakeTokenizer):
        def encode(self, text, add_special_tokens=True):
            return []  # the generator refuses an empty prompt

    gen = FakeGenerator(script=(79, 75, 0))
    engine = Engine(lambda: (None, NoPrompt()),
                    EngineSettings(prefix_cache_bytes=0, monitor=MonitorSettings(action="warn", interval_s=0.01)),
                    generator_factory=lambda *a: gen)
    engine.start(timeout_s=5)
    status = engine.stats()["divergence_monitor"]
    assert status["status"] == "unknown" and "empty prompt" in status["error"]
    handle = engine.submit(req(max_tokens=3))
    assert collect(handle)[-1].reason in ("eos", "length")
    engine.stop()


# ---- configuration, /health and /metrics ---------------------------------------------------

def test_config_and_cli_fields_become_monitor_settings():
    cfg = build_config({"divergence_monitor": "serialize", "divergence_probe_interval_s": 5,
                        "divergence_probe_tokens": 8})
    s = monitor_settings(cfg)
    assert (s.action, s.interval_s, s.max_tokens, s.prompt) == ("serialize", 5, 8, DEFAULT_PROBE_PROMPT)
    assert monitor_settings(build_config({"divergence_probe_prompt": "hello"})).prompt == "hello"
    with pytest.raises(ValueError, match="divergence_monitor"):
        build_config({"divergence_monitor": "panic"})
    with pytest.raises(ValueError, match="positive"):
        build_config({"divergence_probe_interval_s": 0})


def scrape(c) -> dict:
    out = {}
    for family in text_string_to_metric_families(c.simulate_get("/metrics").text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_status_shows_in_health_and_metrics_after_a_planted_divergence():
    gen = FakeGenerator(never_finish=True, step_s=0.002, batch_shift=1)
    engine = monitored(gen, action="warn")
    c = testing.TestClient(create_app(ServerConfig(divergence_monitor="warn"), engine, served(), {}))
    before = scrape(c)
    assert before[("mlx_proof_divergence_monitor_status", (("status", "unknown"),))] == 1
    assert before[("mlx_proof_divergence_first_divergent_index", ())] == -1
    assert before[("mlx_proof_engine_serial_decoding", ())] == 0
    handle = engine.submit(req(max_tokens=300))
    wait_for(lambda: engine.stats()["divergence_monitor"]["divergences"] >= 1)
    health = c.simulate_get("/health").json
    mon = health["engine"]["divergence_monitor"]
    assert mon["status"] == "warning" and mon["action"] == "warn" and mon["probes"] >= 1
    assert mon["first_divergent_index"] == 0 and mon["margin"] > 0 and mon["last_probe_at"].endswith("Z")
    after = scrape(c)
    assert after[("mlx_proof_divergence_monitor_status", (("status", "warning"),))] == 1
    assert after[("mlx_proof_divergence_monitor_status", (("status", "ok"),))] == 0
    assert after[("mlx_proof_divergence_probes_total", ())] >= 1
    assert after[("mlx_proof_divergence_divergences_total", ())] >= 1
    assert after[("mlx_proof_divergence_first_divergent_index", ())] == 0
    assert after[("mlx_proof_divergence_margin", ())] > 0
    assert after[("mlx_proof_divergence_last_probe_timestamp_seconds", ())] > 1.6e9
    handle.cancel()
    engine.stop()


def test_under_deterministic_the_monitor_is_inert_and_says_why():
    gen = FakeGenerator(script=(79, 75, 0))
    engine = monitored(gen, deterministic=True)
    status = engine.stats()["divergence_monitor"]
    assert status["status"] == "unknown" and "deterministic" in status["error"] and status["reference"] is None
    assert gen.inserted == []  # no reference decode either
    engine.stop()
