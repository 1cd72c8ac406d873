"""The real server on the real default model, spoken to by the official openai SDK."""

from __future__ import annotations

import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def test_health_reports_model_backend_and_engine(server):
    health = server.health()
    assert health["status"] == "ok"
    assert health["model"]["id"] == "smollm2-135m"
    assert len(health["model"]["weights_sha256"]) == 64
    assert health["backend"]["backend"] in {"cpu", "metal", "cuda"}
    assert health["backend"]["blas"]
    if sys.platform.startswith("linux"):
        # jemalloc where Debian's libjemalloc2 is installed (.ci/run installs it), glibc's otherwise, with why
        from serving.backend import find_jemalloc

        allocator = health["backend"]["allocator"]
        assert allocator.startswith("jemalloc (") if find_jemalloc() else allocator == "glibc malloc"
        assert find_jemalloc() or "libjemalloc2" in health["backend"]["allocator_note"]
        assert "jemalloc" not in (health["backend"]["blas_preload"] or "")  # peers get the BLAS only
        if "openblas-shim" in health["backend"]["blas"] and platform.machine() == "x86_64":
            # The default model comes from a Q4_1 GGUF (its head Q8_0): every matrix is exact blocks
            packed = health["engine"]["packed_weights"]
            assert packed["packed"] == packed["examined"] > 0 and packed["bytes"] > 0, packed
    assert health["engine"]["mode"] == "continuous-batching"
    assert "queue_depth" in health["engine"]


def test_chat_non_stream_answers_paris(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=FRANCE, max_tokens=20)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason in {"stop", "length"}
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 20


def test_chat_stream_matches_non_stream(client, model_id):
    whole = client.chat.completions.create(model=model_id, messages=FRANCE, max_tokens=12)
    chunks = list(client.chat.completions.create(model=model_id, messages=FRANCE, max_tokens=12, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content  # greedy: same tokens either way
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3  # token by token


def test_length_finish_has_exact_usage(client, model_id):
    r = client.completions.create(model=model_id, prompt=[1, 2, 3, 4, 5], max_tokens=7,
                                  logit_bias={"2": -100, "0": -100})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == 5
    assert r.usage.completion_tokens == 7


def test_completions_stream_and_stop_string(client, model_id):
    prompt = "1, 2, 3, 4, 5,"
    chunks = list(client.completions.create(model=model_id, prompt=prompt, max_tokens=30, stream=True,
                                            stop=["9"]))
    text = "".join(c.choices[0].text for c in chunks)
    assert "9" not in text
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}


def test_seeded_sampling_is_reproducible(client, model_id):
    kwargs = dict(model=model_id, messages=FRANCE, max_tokens=15, temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b


def test_four_concurrent_requests(client, model_id):
    def ask(i):
        return client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": f"Count to {i + 3}."}], max_tokens=16)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, range(4)))
    assert all(r.choices[0].message.content for r in results)
    assert all(r.usage.completion_tokens > 0 for r in results)


def test_eight_streams_are_batched_together(client, model_id, server):
    def stream(i):
        arrivals = []
        chunks = client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": f"Write a short poem about number {i}."}],
            max_tokens=24, stream=True, stream_options={"include_usage": True})
        finish, usage = None, None
        for c in chunks:
            if c.choices and c.choices[0].delta.content:
                arrivals.append(time.monotonic())
            if c.choices and c.choices[0].finish_reason:
                finish = c.choices[0].finish_reason
            if c.usage:
                usage = c.usage
        return arrivals, finish, usage

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(stream, range(8)))
    for arrivals, finish, usage in results:
        assert finish in {"stop", "length"}
        assert usage.completion_tokens >= len(arrivals) > 1
    # Streams overlapped in time: each started before any other finished.
    first_token = max(a[0] for a, _, _ in results)
    last_token = min(a[-1] for a, _, _ in results)
    assert first_token < last_token
    assert server.health()["engine"]["peak_decoding"] >= 4


@pytest.mark.parametrize("body, status", [
    ("{not json", 400),
    ('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', 400),
    ('{"messages": "hi"}', 400),
    ('{"messages": [{"role": "user", "content": "' + "hello " * 9000 + '"}]}', 400),
])
def test_bad_input_is_4xx_and_server_keeps_serving(server, body, status):
    r = httpx.post(server.base_url + "/v1/chat/completions", content=body, timeout=60)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    ok = httpx.post(server.base_url + "/v1/chat/completions", timeout=60,
                    json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok.status_code == 200


def test_disconnected_stream_is_cancelled(server):
    body = {"messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 2000, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 6:
                break
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.health()["engine"]["decoding"] > 0:
        time.sleep(0.5)
    assert server.health()["engine"]["decoding"] == 0
