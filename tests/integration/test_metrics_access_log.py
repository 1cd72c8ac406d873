"""GET /metrics and the access log on a real server (real model, API key on), driven by the
official openai SDK: the exposition parses, its counters move, and the access-log file holds
one JSON line per request with its fields, and neither the prompt nor the key."""

from __future__ import annotations

import json
import sys
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.sut import free_port, launched

from .conftest import DEFAULT_MODEL

pytestmark = pytest.mark.integration

KEY = "metrics-test-key"
PROMPT = "Name one colour of the rainbow. ZEBRA-QUARTZ-7"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metrics")
    access_log = folder / "access.jsonl"
    port = free_port()
    argv = [sys.executable, "-m", "serving", "serve", "--model", DEFAULT_MODEL, "--port", str(port),
            "--api-key", KEY, "--access-log", str(access_log), "--max-tokens-ceiling", "256"]
    with launched(argv, port=port, log_path=folder / "server.log", ready_timeout_s=1800) as running:
        yield running, access_log


@pytest.fixture(scope="module")
def sdk(keyed):
    server, _ = keyed
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)


def scrape(base_url: str, **headers) -> dict[tuple[str, tuple], float]:
    r = httpx.get(base_url + "/metrics", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def lines_after(path, start: int, count: int, *, wait_s: float = 60) -> list[dict]:
    """The lines written after the first `start`, once there are `count` of them (a streamed
    request's line comes when the server closes its body, just after the client saw the end)."""
    deadline = time.monotonic() + wait_s
    while True:
        new = read_lines(path)[start:]
        if len(new) >= count or time.monotonic() > deadline:
            return new
        time.sleep(0.2)


def test_metrics_need_the_key_parse_and_move_as_requests_are_served(keyed, sdk):
    server, _ = keyed
    assert httpx.get(server.base_url + "/metrics", timeout=30).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    before = scrape(server.base_url, **auth)
    model = sdk.models.list().data[0].id
    messages = [{"role": "user", "content": PROMPT}]
    whole = sdk.chat.completions.create(model=model, messages=messages, max_tokens=8)
    chunks = list(sdk.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True,
                                              stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=model, messages=[{"role": "wizard", "content": "x"}], max_tokens=8)
    after = scrape(server.base_url, **auth)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mlx_proof_requests_total", route=CHAT, method="POST", status="200") == 2
    assert moved("mlx_proof_requests_total", route=CHAT, method="POST", status="400") == 1
    assert moved("mlx_proof_requests_total", route="/v1/models", method="GET", status="200") == 1
    assert moved("mlx_proof_tokens_total", route=CHAT, kind="prompt") == (whole.usage.prompt_tokens
                                                                          + usage.prompt_tokens)
    assert moved("mlx_proof_tokens_total", route=CHAT, kind="completion") == (whole.usage.completion_tokens
                                                                              + usage.completion_tokens)
    # The same prompt twice: the second starts from the first's cached KV state.
    assert usage.prompt_tokens_details.cached_tokens > 0
    assert moved("mlx_proof_tokens_total", route=CHAT, kind="cached") >= usage.prompt_tokens_details.cached_tokens
    assert moved("mlx_proof_prefix_cache_hits_total") >= 1
    assert moved("mlx_proof_time_to_first_token_seconds_count", route=CHAT) == 2
    assert moved("mlx_proof_inter_token_latency_seconds_count", route=CHAT) >= 2
    assert moved("mlx_proof_engine_generated_tokens_total") >= whole.usage.completion_tokens
    assert sum(moved("mlx_proof_finish_reasons_total", route=CHAT, reason=r) for r in ("eos", "length")) == 2
    assert ("mlx_proof_engine_batch_size", ()) in after and ("mlx_proof_engine_queue_depth", ()) in after
    assert value(after, "mlx_proof_engine_up") == 1


def test_access_log_has_one_line_per_request_with_its_fields(keyed, sdk):
    server, path = keyed
    start = len(read_lines(path))
    model = sdk.models.list().data[0].id
    messages = [{"role": "user", "content": PROMPT}]
    whole = sdk.chat.completions.create(model=model, messages=messages, max_tokens=6)
    list(sdk.chat.completions.create(model=model, messages=messages, max_tokens=6, stream=True))
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong", max_retries=0).models.list()
    # A client that hangs up after the first token of a long answer.
    stream = sdk.chat.completions.create(model=model, max_tokens=256, stream=True, messages=[
        {"role": "user", "content": "Write a long story about a dragon and a castle."}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    server.health()

    lines = lines_after(path, start, 6)
    assert len(lines) == 6, lines
    # Lines are written as requests end: the hung-up stream's may come after the health check's.
    listed, whole_line, streamed, refused = lines[:4]
    (hung_up,) = [line for line in lines[4:] if line["path"] == CHAT]
    (health,) = [line for line in lines[4:] if line["path"] == "/health"]
    assert (listed["path"], listed["status"]) == ("/v1/models", 200)
    assert listed["user_agent"].startswith("OpenAI/Python")
    for line, is_stream in ((whole_line, False), (streamed, True)):
        assert line["method"] == "POST" and line["path"] == CHAT and line["status"] == 200
        assert line["dialect"] == "openai-chat" and line["stream"] is is_stream and line["model"] == model
        assert line["prompt_tokens"] == whole.usage.prompt_tokens
        assert line["completion_tokens"] > 0 and line["finish_reason"] in ("eos", "length")
        assert "cached_tokens" in line and line["ttft_ms"] <= line["total_ms"]
        assert line["time"].endswith("Z") and line["response_id"].startswith("chatcmpl-")
    assert whole_line["response_id"] == whole.id
    assert refused["status"] == 401 and refused["error"] == "invalid_api_key"
    assert hung_up["stream"] is True and hung_up["finish_reason"] == "cancelled"
    assert hung_up["completion_tokens"] < 256
    assert (health["path"], health["status"]) == ("/health", 200) and "dialect" not in health
    raw = path.read_text(encoding="utf-8")
    assert "ZEBRA-QUARTZ" not in raw and "dragon" not in raw and KEY not in raw and "wrong" not in raw
