"""The real server on the real default model, spoken to by the official anthropic SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
COUNT = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
# This SDK no longer has a temperature argument; the field still exists on the wire.
GREEDY = {"extra_body": {"temperature": 0}}


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)


def test_create_matches_the_streamed_final_message(client):
    request = dict(model=MODEL, max_tokens=16, **GREEDY, messages=FRANCE,
                   system=[{"type": "text", "text": "Answer in one sentence.", "cache_control": {"type": "ephemeral"}}])
    client.messages.create(**request)  # warm the prefix cache, so both runs below find the same cached prefix
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        texts = list(stream.text_stream)
        streamed = stream.get_final_message()
    assert "Paris" in whole.content[0].text
    assert [b.model_dump() for b in streamed.content] == [b.model_dump() for b in whole.content]
    assert "".join(texts) == whole.content[0].text and len(texts) >= 3  # token by token
    assert streamed.stop_reason == whole.stop_reason and whole.stop_reason in {"end_turn", "max_tokens"}
    assert streamed.usage.model_dump() == whole.usage.model_dump()
    assert 0 < whole.usage.output_tokens <= 16
    assert 0 < whole.usage.cache_read_input_tokens < whole.usage.input_tokens


def test_stop_sequence_is_honoured_and_reported(client):
    r = client.messages.create(model=MODEL, max_tokens=40, **GREEDY, messages=COUNT, stop_sequences=["5"])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == "5"
    assert "4" in r.content[0].text and "5" not in r.content[0].text
    with client.messages.stream(model=MODEL, max_tokens=40, **GREEDY, messages=COUNT,
                                stop_sequences=["5"]) as stream:
        streamed = stream.get_final_message()
    assert (streamed.stop_reason, streamed.stop_sequence, streamed.content[0].text) == \
        ("stop_sequence", "5", r.content[0].text)


def test_max_tokens_stop_reason(client):
    r = client.messages.create(model=MODEL, max_tokens=3, **GREEDY, messages=COUNT)
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 3


def test_count_tokens_equals_input_tokens(client):
    request = dict(model=MODEL, system="You are terse.", messages=[
        {"role": "system", "content": "Never apologise."},
        {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}])
    counted = client.messages.count_tokens(**request)
    r = client.messages.create(max_tokens=4, **GREEDY, **request)
    assert counted.input_tokens == r.usage.input_tokens > 10


@pytest.mark.parametrize("body, status, kind", [
    (b'{"model": "m", "max_tokens": ', 400, "invalid_request_error"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}', 400, "invalid_request_error"),
    (b'{"model": "m", "max_tokens": "lots", "messages": []}', 400, "invalid_request_error"),
    (b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", '
     b'"source": {"type": "url", "url": "http://x/y.png"}}]}]}', 400, "invalid_request_error"),
])
def test_malformed_bodies_get_anthropic_errors(server, body, status, kind):
    r = httpx.post(server.base_url + "/v1/messages?beta=true", content=body,
                   headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    assert r.status_code == status
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == kind


def test_unknown_route_under_messages_is_anthropic_404(server):
    r = httpx.post(server.base_url + "/v1/messages/batches", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_sdk_raises_its_typed_error(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=5, messages=FRANCE, tool_choice={"type": "tool", "name": "g"},
                               tools=[{"name": "f", "input_schema": {"type": "object"}}])
    assert "tool_choice" in info.value.body["error"]["message"]
