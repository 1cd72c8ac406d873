"""Serial decoding holds for the WHOLE of a streamed response, not until its first byte.

The real app, served by waitress on 127.0.0.1, over the real engine loop with a fake
batch generator that records which sequences share each step. A first streamed request
is read until its first token; only then is a second one sent, while the first is still
decoding. Under --deterministic, and under the divergence monitor's serialize action
once tripped, no step may ever hold both. The seed fork's HTTP lock, released at the
first streamed byte, would let the second join the first's batch, and fail these tests;
so does plain continuous batching (the last test shows that the check sees it).
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from waitress.server import create_server

from serving.app import create_app
from serving.config import ServerConfig
from serving.engine.divergence_monitor import MonitorSettings
from serving.engine.loop import Engine, EngineSettings

from .fakes import FakeGenerator, FakeTokenizer, served

FIRST_TOKENS, SECOND_TOKENS = 30, 8
BODY = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
PROBE = "probe!"  # the monitor's probe prompt; one token per character with the fake tokenizer
PROBE_IDS = [ord(c) for c in PROBE]


class Served:
    """create_app + waitress on a free port, in a thread."""

    def __init__(self, config: ServerConfig, engine: Engine) -> None:
        self.engine = engine
        self.server = create_server(create_app(config, engine, served(), {}), host="127.0.0.1", port=0,
                                    threads=4, channel_request_lookahead=1)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.close()
        self.engine.stop()


def engine(gen: FakeGenerator, **settings) -> Engine:
    e = Engine(lambda: (None, FakeTokenizer()), EngineSettings(prefix_cache_bytes=0, max_concurrency=8, **settings),
               generator_factory=lambda *a: gen)
    e.start(timeout_s=5)
    return e


def content_chunks(lines):
    """The SSE data payloads that carry generated text, as they arrive."""
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[len("data: "):])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                yield chunk


def two_streams(app: Served, gen: FakeGenerator) -> dict:
    """Stream one request; at its first token send a second; read both to the end."""
    out: dict = {}
    with httpx.Client(base_url=app.url, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json={**BODY, "max_tokens": FIRST_TOKENS}) as first:
            assert first.status_code == 200
            chunks = content_chunks(first.iter_lines())
            got = [next(chunks)]  # the first token has reached the client
            out["steps_when_second_sent"] = len(gen.batches)

            def second():
                with httpx.Client(base_url=app.url, timeout=30) as c2:
                    with c2.stream("POST", "/v1/chat/completions",
                                   json={**BODY, "max_tokens": SECOND_TOKENS}) as r:
                        out["second"] = list(content_chunks(r.iter_lines()))

            t = threading.Thread(target=second)
            t.start()
            got += list(chunks)
            out["first"] = got
            t.join(30)
    first_uid, second_uid = [i["uid"] for i in gen.inserted if i["prompt"] != PROBE_IDS][-2:]
    out["first_steps"] = [i for i, b in enumerate(gen.batches) if first_uid in b]
    out["second_steps"] = [i for i, b in enumerate(gen.batches) if second_uid in b]
    out["shared"] = [b for b in gen.batches if first_uid in b and second_uid in b]
    return out


def assert_serial_end_to_end(run: dict) -> None:
    assert len(run["first"]) == FIRST_TOKENS and len(run["second"]) == SECOND_TOKENS
    # the first was mid-stream when the second arrived: it decoded on afterwards
    assert max(run["first_steps"]) > run["steps_when_second_sent"]
    assert run["shared"] == []
    assert min(run["second_steps"]) > max(run["first_steps"])


def test_deterministic_serves_two_streams_one_after_the_other_end_to_end():
    gen = FakeGenerator(never_finish=True, step_s=0.01)
    app = Served(ServerConfig(deterministic=True, prefix_cache_bytes=0, max_concurrency=8),
                 engine(gen, deterministic=True))
    try:
        run = two_streams(app, gen)
    finally:
        app.close()
    assert_serial_end_to_end(run)
    assert all(len(b) == 1 for b in gen.batches)


def test_serialize_after_a_planted_divergence_holds_for_whole_streams():
    gen = FakeGenerator(never_finish=True, step_s=0.01, batch_shift=1)
    monitor = MonitorSettings(action="serialize", interval_s=0.01, prompt=PROBE, max_tokens=4)
    app = Served(ServerConfig(divergence_monitor="serialize", max_concurrency=8), engine(gen, monitor=monitor))
    try:
        with httpx.Client(base_url=app.url, timeout=30) as client:  # traffic for a probe to batch with
            r = client.post("/v1/chat/completions", json={**BODY, "stream": False, "max_tokens": 10})
            assert r.status_code == 200
            health = client.get("/health").json()
        assert health["engine"]["serial_decoding"] and health["engine"]["serial_reason"] == "divergence-monitor"
        assert health["engine"]["divergence_monitor"]["status"] == "warning"
        tripped_at = len(gen.batches)
        run = two_streams(app, gen)
    finally:
        app.close()
    assert_serial_end_to_end(run)
    assert all(len(b) == 1 for b in gen.batches[tripped_at:])


def test_the_check_sees_co_batching_when_decoding_is_not_serial():
    gen = FakeGenerator(never_finish=True, step_s=0.01)
    app = Served(ServerConfig(max_concurrency=8), engine(gen))
    try:
        run = two_streams(app, gen)
    finally:
        app.close()
    assert run["shared"]  # the second joined the first's batch while it streamed
    with pytest.raises(AssertionError):
        assert_serial_end_to_end(run)
