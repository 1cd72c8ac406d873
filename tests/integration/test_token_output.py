"""Token-level output and the prefix cache, on the real server and the real default model."""

from __future__ import annotations

import math
import time
import uuid

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def _check_greedy_logprobs(entries, k):
    assert entries
    for e in entries:
        assert len(e.top_logprobs) == k
        best = max(t.logprob for t in e.top_logprobs)
        assert e.logprob == pytest.approx(best, abs=1e-5)  # greedy: the chosen token is the top-1
        assert e.top_logprobs[0].token == e.token
        assert sum(math.exp(t.logprob) for t in e.top_logprobs) <= 1 + 1e-5


def test_chat_logprobs_through_the_sdk(client):
    r = client.chat.completions.create(model="smollm2-135m", messages=QUESTION, max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=3)
    entries = r.choices[0].logprobs.content
    _check_greedy_logprobs(entries, 3)
    assert "".join(e.token for e in entries) == r.choices[0].message.content


def test_streamed_chat_logprobs_through_the_sdk_match_non_streamed(client):
    kwargs = dict(model="smollm2-135m", messages=QUESTION, max_tokens=8, temperature=0, logprobs=True,
                  top_logprobs=2)
    whole = client.chat.completions.create(**kwargs).choices[0].logprobs.content
    streamed = [e for c in client.chat.completions.create(stream=True, **kwargs)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    _check_greedy_logprobs(streamed, 2)
    assert [e.token for e in streamed] == [e.token for e in whole]


def test_completions_logprobs_through_the_sdk(client):
    r = client.completions.create(model="smollm2-135m", prompt="The sky is", max_tokens=5, temperature=0,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert value == pytest.approx(max(top.values()), abs=1e-5)


def test_return_token_ids_matches_usage(server):
    body = {"messages": QUESTION, "max_tokens": 6, "return_token_ids": True}
    r = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=120).json()
    assert len(r["prompt_token_ids"]) == r["usage"]["prompt_tokens"]
    assert 0 < len(r["choices"][0]["token_ids"]) <= r["usage"]["completion_tokens"]


def test_prefix_cache_hit_gives_identical_greedy_tokens(server):
    """The same long prompt twice: cold prefill, then a cache hit; token for token the same."""
    system = f"Session {uuid.uuid4().hex}. " + "You are a careful assistant who answers briefly. " * 20
    body = {"messages": [{"role": "system", "content": system}, *QUESTION], "max_tokens": 16,
            "temperature": 0, "return_token_ids": True}
    url = server.base_url + "/v1/chat/completions"
    cold = httpx.post(url, json=body, timeout=300).json()
    warm = httpx.post(url, json=body, timeout=300).json()
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] < 20  # only the template's opening is shared
    assert warm["usage"]["prompt_tokens_details"]["cached_tokens"] >= cold["usage"]["prompt_tokens"] - 1
    assert warm["choices"][0]["token_ids"] == cold["choices"][0]["token_ids"]
    # a follow-up turn that resends the answer reuses the whole conversation so far
    follow = {**body, "messages": [*body["messages"],
                                   {"role": "assistant", "content": cold["choices"][0]["message"]["content"]},
                                   {"role": "user", "content": "And one more?"}]}
    turn2 = httpx.post(url, json=follow, timeout=300).json()
    assert turn2["usage"]["prompt_tokens_details"]["cached_tokens"] > cold["usage"]["prompt_tokens"]
    stats = server.health()["engine"]["prefix_cache"]
    assert stats["enabled"] and stats["hit_tokens"] > 0 and stats["bytes"] > 0


def test_twenty_megabyte_body_is_413_in_under_a_second(server):
    big = b'{"messages": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    t0 = time.monotonic()
    r = httpx.post(server.base_url + "/v1/chat/completions", content=big, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert time.monotonic() - t0 < 1.0
    assert r.json()["error"]["code"] == "payload_too_large"
