"""GET /metrics and the access log against a fake engine: counters move, auth guards /metrics
(with the --metrics-public opt-out), and one JSON line per request carries the fields, never
the prompt or a key."""

from __future__ import annotations

import io
import json
import logging

import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.config import ServerConfig, build_config
from serving.telemetry import ACCESS_LOGGER, configure_access_log
from serving.telemetry.middleware import ClosingStream

from .fakes import FakeEngine, served
from .test_engine_loop import start
from .test_tool_api import CALL, OPENAI_TOOLS

CHAT = "/v1/chat/completions"
SECRET_PROMPT = "PURPLE-ELEPHANT-PROMPT"
KEY = "sk-very-secret-key"
HI = [{"role": "user", "content": SECRET_PROMPT}]


def client(engine=None, **cfg):
    return testing.TestClient(create_app(ServerConfig(**cfg), engine or FakeEngine(), served(), {}))


def scrape(c, **headers) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, keyed by (sample name, sorted labels)."""
    result = c.simulate_get("/metrics", headers=headers)
    assert result.status_code == 200, result.text
    assert result.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(result.text) for s in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def access(caplog):
    """The access log's lines, parsed."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    def lines() -> list[dict]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]

    return lines


# ---- /metrics -------------------------------------------------------------------------

def test_metrics_parse_and_counters_move_for_whole_streamed_and_error_requests():
    c = client()
    before = scrape(c)
    assert value(before, "mlx_proof_requests_total", route=CHAT, method="POST", status="200") == 0
    assert c.simulate_post(CHAT, json={"messages": HI}).status_code == 200
    stream = c.simulate_post(CHAT, json={"messages": HI, "stream": True})
    assert stream.status_code == 200 and "[DONE]" in stream.text
    assert c.simulate_post(CHAT, json={"messages": [{"role": "wizard", "content": "x"}]}).status_code == 400
    after = scrape(c)
    assert value(after, "mlx_proof_requests_total", route=CHAT, method="POST", status="200") == 2
    assert value(after, "mlx_proof_requests_total", route=CHAT, method="POST", status="400") == 1
    assert value(after, "mlx_proof_requests_total", route="/metrics", method="GET", status="200") == 1
    prompt = len(f"<user>{SECRET_PROMPT}<assistant>")
    assert value(after, "mlx_proof_tokens_total", route=CHAT, kind="prompt") == 2 * prompt
    assert value(after, "mlx_proof_tokens_total", route=CHAT, kind="completion") == 2 * 3
    assert value(after, "mlx_proof_time_to_first_token_seconds_count", route=CHAT) == 2
    assert value(after, "mlx_proof_inter_token_latency_seconds_count", route=CHAT) == 2 * 2  # 3 tokens, 2 gaps
    assert value(after, "mlx_proof_request_duration_seconds_count", route=CHAT, method="POST") == 3
    assert value(after, "mlx_proof_finish_reasons_total", route=CHAT, reason="eos") == 2
    assert value(after, "mlx_proof_requests_in_flight") == 1  # the scrape itself


def test_every_dialect_route_is_its_own_label_and_cached_tokens_count():
    c = client(FakeEngine(cached=4))
    c.simulate_post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    c.simulate_post("/v1/messages", json={"model": "m", "max_tokens": 2, "messages": HI})
    c.simulate_post("/v1/responses", json={"input": "hi", "stream": True})
    s = scrape(c)
    assert value(s, "mlx_proof_finish_reasons_total", route="/v1/completions", reason="length") == 1
    assert value(s, "mlx_proof_finish_reasons_total", route="/v1/messages", reason="length") == 1
    assert value(s, "mlx_proof_finish_reasons_total", route="/v1/responses", reason="eos") == 1
    for route in ("/v1/completions", "/v1/messages", "/v1/responses"):
        assert value(s, "mlx_proof_tokens_total", route=route, kind="cached") == 4


def test_engine_failure_counts_a_500_and_the_error_finish():
    c = client(FakeEngine(fail=True))
    assert c.simulate_post(CHAT, json={"messages": HI}).status_code == 500
    s = scrape(c)
    assert value(s, "mlx_proof_requests_total", route=CHAT, method="POST", status="500") == 1
    assert value(s, "mlx_proof_finish_reasons_total", route=CHAT, reason="error") == 1


def test_tool_call_finish_is_counted_as_tool_calls():
    c = testing.TestClient(create_app(ServerConfig(tool_prompt="generic"), FakeEngine(CALL),
                                      served(context_length=4096), {}))
    body = c.simulate_post(CHAT, json={"messages": HI, "tools": OPENAI_TOOLS}).json
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    s = scrape(c)
    assert value(s, "mlx_proof_finish_reasons_total", route=CHAT, reason="tool_calls") == 1
    assert value(s, "mlx_proof_finish_reasons_total", route=CHAT, reason="eos") == 0


def test_unrouted_paths_share_one_label():
    c = client()
    for path in ("/nope", "/wp-admin", "/v1/nothing"):
        assert c.simulate_get(path).status_code == 404
    s = scrape(c)
    assert value(s, "mlx_proof_requests_total", route="unmatched", method="GET", status="404") == 3
    assert not any(dict(labels).get("route") == "/nope" for _, labels in s)


class StatsEngine(FakeEngine):
    def stats(self):
        return {"mode": "fake", "alive": True, "decoding": 3, "waiting": 2, "queue_depth": 2,
                "max_concurrency": 8, "steps": 40, "generated_tokens": 120, "rejected_busy": 1,
                "timeouts": 0, "errors": 0,
                "prefix_cache": {"enabled": True, "bytes": 2048, "entries": 2, "lookups": 5, "hits": 4,
                                 "misses": 1, "hit_tokens": 100, "miss_tokens": 20},
                "lookup_decoding": {"enabled": True, "draft_tokens": 4, "steps": 10, "drafted": 38, "accepted": 15}}


def test_engine_gauges_and_prefix_cache_counters_are_read_at_scrape_time():
    s = scrape(client(StatsEngine()))
    assert value(s, "mlx_proof_engine_up") == 1
    assert value(s, "mlx_proof_engine_queue_depth") == 2
    assert value(s, "mlx_proof_engine_batch_size") == 3
    assert value(s, "mlx_proof_engine_steps_total") == 40
    assert value(s, "mlx_proof_engine_rejected_busy_total") == 1
    assert value(s, "mlx_proof_prefix_cache_hits_total") == 4
    assert value(s, "mlx_proof_prefix_cache_misses_total") == 1
    assert value(s, "mlx_proof_prefix_cache_hit_tokens_total") == 100
    assert value(s, "mlx_proof_prefix_cache_bytes") == 2048
    assert value(s, "mlx_proof_lookup_steps_total") == 10
    assert value(s, "mlx_proof_lookup_accepted_tokens_total") == 15


class BrokenStatsEngine(FakeEngine):
    def stats(self):
        raise RuntimeError("stats exploded")


def test_a_failing_engine_stats_does_not_fail_the_scrape():
    s = scrape(client(BrokenStatsEngine()))
    assert value(s, "mlx_proof_engine_up") == 0


def test_the_real_engine_loop_reports_prefix_cache_hits_and_batch():
    from .fakes import FakeGenerator

    engine = start(FakeGenerator(script=(72, 0)), cache_bytes=1 << 20)
    try:
        c = client(engine)
        c.simulate_post("/v1/completions", json={"prompt": "abcd"})
        assert c.simulate_post("/v1/completions", json={"prompt": "abcdHxy"}).json["usage"][
            "prompt_tokens_details"]["cached_tokens"] == 5
        s = scrape(c)
    finally:
        engine.stop()
    assert value(s, "mlx_proof_prefix_cache_hits_total") == 1
    assert value(s, "mlx_proof_prefix_cache_misses_total") == 1
    assert value(s, "mlx_proof_prefix_cache_hit_tokens_total") == 5
    assert value(s, "mlx_proof_tokens_total", route="/v1/completions", kind="cached") == 5
    assert value(s, "mlx_proof_engine_batch_size") == 0 and value(s, "mlx_proof_engine_queue_depth") == 0
    assert value(s, "mlx_proof_engine_generated_tokens_total") == 4


def test_two_apps_in_one_process_keep_their_own_counters():
    a, b = client(), client()
    a.simulate_post(CHAT, json={"messages": HI})
    assert value(scrape(a), "mlx_proof_requests_total", route=CHAT, method="POST", status="200") == 1
    assert value(scrape(b), "mlx_proof_requests_total", route=CHAT, method="POST", status="200") == 0


def test_metrics_need_the_key_when_one_is_set():
    c = client(api_key=KEY)
    assert c.simulate_get("/metrics").status_code == 401
    assert c.simulate_get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scrape(c, Authorization=f"Bearer {KEY}")
    s = scrape(c, **{"x-api-key": KEY})
    assert value(s, "mlx_proof_requests_total", route="/metrics", method="GET", status="401") == 2


def test_metrics_public_opens_metrics_only():
    c = client(api_key=KEY, metrics_public=True)
    scrape(c)
    assert c.simulate_post(CHAT, json={"messages": HI}).status_code == 401
    assert c.simulate_get("/v1/models").status_code == 401
    assert c.simulate_post("/metrics").status_code == 401  # only reads are open
    s = scrape(c)
    assert value(s, "mlx_proof_requests_total", route=CHAT, method="POST", status="401") == 1


def test_config_and_cli_carry_the_new_settings(tmp_path):
    cfg = build_config({"access_log": str(tmp_path / "a.log"), "metrics_public": True})
    assert cfg.access_log.endswith("a.log") and cfg.metrics_public
    assert ServerConfig().access_log == "stderr" and not ServerConfig().metrics_public
    with pytest.raises(ValueError, match="access_log"):
        build_config({"access_log": " "})
    from serving.api.resources import public_config
    assert "access_log" not in public_config(cfg)  # a local path stays out of evidence manifests


# ---- the access log ---------------------------------------------------------------------

GENERATION_FIELDS = {"time", "method", "path", "route", "status", "dialect", "stream", "model", "prompt_tokens",
                     "cached_tokens", "completion_tokens", "finish_reason", "ttft_ms", "total_ms", "user_agent",
                     "response_id"}


def _no_secrets(lines):
    raw = json.dumps(lines)
    assert SECRET_PROMPT not in raw and KEY not in raw
    assert "Hello" not in raw  # nor the output


def test_one_line_per_request_with_the_fields_and_no_prompt_or_key(access):
    c = client(FakeEngine(cached=2), api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}", "User-Agent": "OpenAI/Python 1.99", "X-Request-Id": "req-42"}
    c.simulate_post(CHAT, json={"model": "gpt-4o", "messages": HI, "stream": True}, headers=auth)
    c.simulate_post(CHAT, json={"model": "gpt-4o", "messages": HI, "max_tokens": 2},
                    headers={"x-api-key": KEY})
    lines = access()
    assert len(lines) == 2
    streamed, whole = lines
    assert GENERATION_FIELDS | {"request_id"} <= set(streamed)
    assert streamed["method"] == "POST" and streamed["path"] == CHAT and streamed["status"] == 200
    assert streamed["dialect"] == "openai-chat" and streamed["stream"] is True and streamed["model"] == "gpt-4o"
    assert streamed["prompt_tokens"] == len(f"<user>{SECRET_PROMPT}<assistant>")
    assert (streamed["cached_tokens"], streamed["completion_tokens"]) == (2, 3)
    assert streamed["finish_reason"] == "eos"
    assert 0 <= streamed["ttft_ms"] <= streamed["total_ms"]
    assert streamed["user_agent"] == "OpenAI/Python 1.99" and streamed["request_id"] == "req-42"
    assert streamed["response_id"].startswith("chatcmpl-")
    assert streamed["time"].endswith("Z") and "T" in streamed["time"]
    assert whole["stream"] is False and whole["finish_reason"] == "length" and whole["completion_tokens"] == 2
    _no_secrets(lines)


def test_errors_are_logged_with_the_fields_that_exist(access):
    c = client(api_key=KEY)
    c.simulate_post(CHAT, json={"messages": HI})  # no key
    c.simulate_post(CHAT, json={"model": "m", "messages": [{"role": "wizard", "content": SECRET_PROMPT}]},
                    headers={"x-api-key": KEY})
    c.simulate_post(CHAT, body="{not json", headers={"x-api-key": KEY, "content-type": "application/json"})
    unauthorised, invalid, unparsable = access()
    assert unauthorised["status"] == 401 and unauthorised["error"] == "invalid_api_key"
    assert unauthorised["route"] == CHAT and "prompt_tokens" not in unauthorised
    assert invalid["status"] == 400 and invalid["dialect"] == "openai-chat" and invalid["model"] == "m"
    assert invalid["error_param"] == "messages.0.role" and "finish_reason" not in invalid
    assert unparsable["status"] == 400 and unparsable["dialect"] == "openai-chat" and "model" not in unparsable
    _no_secrets(access())


def test_engine_failure_line_has_usage_and_error_finish(access):
    client(FakeEngine(fail=True)).simulate_post("/v1/messages", json={"model": "m", "max_tokens": 5,
                                                                       "messages": HI})
    (line,) = access()
    assert line["status"] == 500 and line["dialect"] == "anthropic-messages"
    assert line["finish_reason"] == "error" and line["error"] == "engine_error"
    assert line["completion_tokens"] == 3


def test_non_generation_routes_get_a_short_line(access):
    c = client()
    c.simulate_get("/v1/models", headers={"User-Agent": "curl/8"})
    c.simulate_get("/health")
    models, health = access()
    assert models["status"] == 200 and models["path"] == "/v1/models" and models["user_agent"] == "curl/8"
    assert {"time", "method", "path", "route", "status", "total_ms"} <= set(health)
    assert not {"dialect", "prompt_tokens", "finish_reason", "ttft_ms"} & set(health)


def _wsgi_stream(app, body: dict):
    env = testing.create_environ(method="POST", path=CHAT, body=json.dumps(body),
                                 headers={"content-type": "application/json"})
    started = {}
    body_iter = app(env, lambda status, headers, exc_info=None: started.setdefault("status", status))
    return started, body_iter


def test_a_client_hanging_up_mid_stream_logs_cancelled_when_the_server_closes_the_body(access):
    app = create_app(ServerConfig(), FakeEngine(), served(), {})
    started, body = _wsgi_stream(app, {"messages": HI, "stream": True})
    assert access() == []  # headers are out, but the stream has not ended: nothing yet
    next(iter(body))  # the role chunk; then the client goes away
    body.close()  # what waitress does when a write fails
    (line,) = access()
    assert started["status"].startswith("200") and line["status"] == 200
    assert line["stream"] is True and line["finish_reason"] == "cancelled"
    assert line["prompt_tokens"] > 0 and "cached_tokens" not in line
    s = scrape(testing.TestClient(app))
    assert value(s, "mlx_proof_finish_reasons_total", route=CHAT, reason="cancelled") == 1
    assert value(s, "mlx_proof_requests_in_flight") == 1  # only the scrape; the stream was let go


def test_a_fully_read_stream_is_logged_once_even_when_closed_after(access):
    app = create_app(ServerConfig(), FakeEngine(), served(), {})
    _, body = _wsgi_stream(app, {"messages": HI, "stream": True})
    chunks = list(body)
    body.close()
    assert b"[DONE]" in b"".join(chunks)
    (line,) = access()
    assert line["finish_reason"] == "eos" and line["completion_tokens"] == 3


def test_closing_stream_reports_a_body_that_raised_as_broken():
    seen = []

    def body():
        yield b"a"
        raise RuntimeError("encoder bug")

    stream = ClosingStream(body(), seen.append)
    assert next(stream) == b"a"
    with pytest.raises(RuntimeError):
        next(stream)
    stream.close()
    assert seen == [True]


def test_access_log_off_writes_nothing(access):
    client(access_log="off").simulate_post(CHAT, json={"messages": HI})
    assert access() == []


@pytest.fixture
def restore_access_logger():
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


def test_access_log_to_a_file_is_bare_json_lines(tmp_path, restore_access_logger):
    path = tmp_path / "logs" / "access.jsonl"
    configure_access_log(str(path))
    logging.getLogger().setLevel(logging.WARNING)  # the server log turned down leaves it on
    c = client()
    c.simulate_post(CHAT, json={"messages": HI})
    c.simulate_get("/v1/models")
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert [l["path"] for l in lines] == [CHAT, "/v1/models"]
    configure_access_log("off")
    c.simulate_get("/v1/models")
    assert len(path.read_text().splitlines()) == 2


def test_access_log_to_stderr(restore_access_logger, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    configure_access_log("stderr")
    client().simulate_get("/health")
    (line,) = err.getvalue().splitlines()
    assert json.loads(line)["path"] == "/health"


def test_client_request_ids_are_reduced_to_identifiers(access):
    client().simulate_get("/health", headers={"X-Request-Id": 'abc" \n\x00' + "x" * 500})
    (line,) = access()
    assert line["request_id"] == "abc" + "x" * 125
