"""A real server on the real default model with --reasoning-parser think, spoken to by the
official openai SDK. SmolLM2 writes no think tags and its template opens none, so this proves
the contract: a reasoning budget is accepted and the output is well formed, and
reasoning_content is absent when there was no reasoning. The split itself is proved on
recorded outputs in tests/unit/test_reasoning_api.py, the budget on this model in
tests/unit/test_reasoning_budget.py."""

from __future__ import annotations

import sys

import httpx
import openai
import pytest

from harness.sut import free_port, launched
from suites.contracts.conformance import check

from .conftest import DEFAULT_MODEL

pytestmark = pytest.mark.integration

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def thinking_server(tmp_path_factory):
    port = free_port()
    argv = [sys.executable, "-m", "serving", "serve", "--model", DEFAULT_MODEL, "--port", str(port),
            "--max-concurrency", "4", "--reasoning-parser", "think"]
    with launched(argv, port=port, log_path=tmp_path_factory.mktemp("reasoning") / "server.log",
                  ready_timeout_s=1800) as running:
        yield running


@pytest.fixture(scope="module")
def client(thinking_server):
    return openai.OpenAI(base_url=thinking_server.base_url + "/v1", api_key="unused", max_retries=0)


def test_health_reports_the_reasoning_parser(thinking_server):
    assert thinking_server.health()["config"]["reasoning_parser"] == "think"


def test_a_budgeted_request_is_well_formed_and_has_no_reasoning_content(client):
    r = client.chat.completions.create(model=DEFAULT_MODEL, messages=FRANCE, max_tokens=24,
                                       extra_body={"reasoning_budget": 8, "enable_thinking": True})
    message = r.choices[0].message
    assert r.choices[0].finish_reason in ("stop", "length")
    assert isinstance(message.content, str) and message.content.strip()
    assert getattr(message, "reasoning_content", None) is None
    assert "<think>" not in message.content and "</think>" not in message.content
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    assert 0 < r.usage.completion_tokens <= 24


def test_a_budgeted_stream_has_no_reasoning_deltas(client):
    stream = client.chat.completions.create(model=DEFAULT_MODEL, messages=FRANCE, max_tokens=16, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"reasoning_budget": 4})
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas).strip()
    assert all(getattr(d, "reasoning_content", None) is None for d in deltas)
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 0


def test_responses_with_an_effort_give_only_a_message(client):
    r = client.responses.create(model=DEFAULT_MODEL, input="What is the capital of France?",
                                max_output_tokens=16, reasoning={"effort": "low"})
    assert [item.type for item in r.output] == ["message"]
    assert r.output_text.strip() and r.usage.output_tokens_details.reasoning_tokens == 0


def test_bodies_conform_to_the_sdk_types_strictly(thinking_server):
    with httpx.Client(base_url=thinking_server.base_url, timeout=300) as http:
        for path, body in (
            ("/v1/chat/completions", {"messages": FRANCE, "max_tokens": 8, "reasoning_budget": 3}),
            ("/v1/chat/completions", {"messages": FRANCE, "max_tokens": 8, "reasoning_budget": 3, "stream": True}),
            ("/v1/responses", {"input": "Hi", "max_output_tokens": 8, "reasoning": {"effort": "medium"},
                               "stream": True}),
            ("/v1/messages", {"model": DEFAULT_MODEL, "messages": FRANCE, "max_tokens": 8,
                              "thinking": {"type": "enabled", "budget_tokens": 4}}),
        ):
            anthropic = path == "/v1/messages"
            r = http.post(path, json=body, headers={"anthropic-version": "2023-06-01"} if anthropic else {})
            verdict = check("POST", path, r.status_code, r.headers["content-type"], r.content, anthropic=anthropic)
            assert r.status_code == 200 and verdict["failures"] == [], (path, verdict)


def test_bad_budget_is_a_400_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=FRANCE, max_tokens=8,
                                       extra_body={"reasoning_budget": -1})
    assert caught.value.body["param"] == "reasoning_budget"
