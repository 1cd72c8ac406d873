"""The shared request path: token-level output, refusals, limits, busy and dead engines, routes."""

from __future__ import annotations

import time

import pytest
from falcon import testing

from serving.app import create_app
from serving.config import ServerConfig
from serving.engine.loop import Engine, EngineSettings
from serving.engine.request import EngineBusy, GenerationRequest

from .fakes import FakeEngine, FakeGenerator, FakeTokenizer, served

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]


def client(engine=None, **cfg):
    return testing.TestClient(create_app(ServerConfig(**cfg), engine or FakeEngine(), served(), {}))


def test_chat_logprobs_top_k_and_token_ids():
    body = client().simulate_post(CHAT, json={"messages": HI, "logprobs": True, "top_logprobs": 2,
                                              "return_token_ids": True}).json
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    assert [c["token"] for c in content] == [chr(100), chr(101), chr(102)]
    assert all(len(c["top_logprobs"]) == 2 and c["bytes"] == list(c["token"].encode()) for c in content)
    assert choice["token_ids"] == [100, 101, 102]
    assert body["prompt_token_ids"] == [ord(c) for c in "<user>hi<assistant>"]


def test_chat_without_logprobs_has_none_and_no_token_ids():
    body = client().simulate_post(CHAT, json={"messages": HI}).json
    assert body["choices"][0]["logprobs"] is None
    assert "token_ids" not in body["choices"][0] and "prompt_token_ids" not in body


def test_streamed_chat_carries_logprobs_and_token_ids_per_chunk():
    text = client().simulate_post(CHAT, json={"messages": HI, "stream": True, "logprobs": True,
                                              "return_token_ids": True}).text
    import json
    chunks = [json.loads(l[6:]) for l in text.split("\n\n") if l.startswith("data: {")]
    assert chunks[0]["prompt_token_ids"]
    deltas = [c["choices"][0] for c in chunks[1:] if c["choices"] and c["choices"][0]["finish_reason"] is None]
    assert [d["token_ids"] for d in deltas] == [[100], [101], [102]]
    assert all(len(d["logprobs"]["content"]) == 1 for d in deltas)


def test_completions_logprobs_legacy_shape():
    body = client().simulate_post("/v1/completions", json={"prompt": "x", "logprobs": 1}).json
    lp = body["choices"][0]["logprobs"]
    assert lp["tokens"] == [chr(100), chr(101), chr(102)]
    assert lp["text_offset"] == [0, 1, 2]
    assert all(len(top) == 1 for top in lp["top_logprobs"])


def test_cached_tokens_reported_in_usage():
    body = client(FakeEngine(cached=5)).simulate_post(CHAT, json={"messages": HI}).json
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 5}


@pytest.mark.parametrize("extra, param", [
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"tool_choice": 123}, "tool_choice"),
    ({"tools": "notalist"}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
     "tools.0.function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function",
                                                                                "function": {"name": "g"}}},
     "tool_choice"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"top_logprobs": 50, "logprobs": True}, "top_logprobs"),
])
def test_meaning_changing_fields_are_refused_by_name(extra, param):
    result = client().simulate_post(CHAT, json={"messages": HI, **extra})
    assert result.status_code == 400
    assert result.json["error"]["param"] == param


def test_text_response_format_and_auto_tool_choice_are_accepted():
    result = client().simulate_post(CHAT, json={"messages": HI, "response_format": {"type": "text"},
                                                "tool_choice": "auto"})
    assert result.status_code == 200


def test_oversized_body_is_413_before_parsing():
    big = b"x" * (20 * 1024 * 1024)
    t0 = time.monotonic()
    result = client().simulate_post(CHAT, body=big, headers={"content-type": "application/json"})
    assert result.status_code == 413
    assert result.json["error"]["code"] == "payload_too_large"
    assert time.monotonic() - t0 < 1.0


class BusyEngine(FakeEngine):
    def submit(self, request):
        raise EngineBusy("64 requests are already waiting")


def test_busy_engine_is_429_with_retry_after():
    result = client(BusyEngine()).simulate_post(CHAT, json={"messages": HI})
    assert result.status_code == 429
    assert result.headers["retry-after"] == "1"
    assert result.json["error"]["code"] == "server_busy"


def _real_engine(gen, **settings) -> Engine:
    engine = Engine(lambda: (None, FakeTokenizer()), EngineSettings(prefix_cache_bytes=0, **settings),
                    generator_factory=lambda *a: gen)
    engine.start(timeout_s=5)
    return engine


def test_full_queue_gets_429_through_the_api():
    engine = _real_engine(FakeGenerator(never_finish=True, step_s=0.01), max_concurrency=1, max_queue=0)
    running = engine.submit(GenerationRequest([1], 10_000))
    next(iter(running.iter_events(poll_s=0.02)))
    result = client(engine).simulate_post(CHAT, json={"messages": HI})
    assert result.status_code == 429 and result.headers["retry-after"]
    running.cancel()
    engine.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_killed_engine_gives_503_within_a_second():
    engine = _real_engine(FakeGenerator(never_finish=True, die_on_step=20, step_s=0.01))
    app = client(engine)
    t0 = time.monotonic()
    in_flight = app.simulate_post(CHAT, json={"messages": HI, "max_tokens": 10_000})
    assert in_flight.status_code == 503 and time.monotonic() - t0 < 1.5
    t1 = time.monotonic()
    after = app.simulate_post(CHAT, json={"messages": HI})
    assert after.status_code == 503 and time.monotonic() - t1 < 1.0
    assert after.json["error"]["code"] == "engine_unavailable"


def test_models_retrieve_and_unknown_model():
    c = client()
    assert c.simulate_get("/v1/models/alias").json["id"] == "alias"
    missing = c.simulate_get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "model_not_found"


def test_unknown_route_is_404_naming_method_and_path():
    result = client().simulate_post("/v1/nothing-here", json={})
    assert result.status_code == 404
    assert "POST /v1/nothing-here" in result.json["error"]["message"]


def test_root_and_health_need_no_key_but_everything_else_does():
    c = client(api_key="sekrit")
    assert c.simulate_head("/").status_code == 200
    assert c.simulate_get("/").json["name"] == "mlx-proof"
    assert c.simulate_get("/health").status_code == 200
    assert c.simulate_post(CHAT, json={"messages": HI}).status_code == 401
    assert c.simulate_post(CHAT, json={"messages": HI}, headers={"x-api-key": "sekrit"}).status_code == 200
    assert c.simulate_post(CHAT, json={"messages": HI},
                           headers={"Authorization": "Bearer sekrit"}).status_code == 200
