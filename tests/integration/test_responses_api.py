"""POST /v1/responses on the real server, through the official openai SDK, greedy."""

from __future__ import annotations

import openai
import pytest

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"
LIFECYCLE = ["response.created", "response.in_progress", "response.output_item.added",
             "response.content_part.added"]
CLOSING = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_create_answers_and_reports_usage(client):
    r = client.responses.create(model="smollm2-135m", input=QUESTION, temperature=0, max_output_tokens=24)
    assert r.object == "response" and r.status in {"completed", "incomplete"}
    assert "Paris" in r.output_text
    assert r.output[0].type == "message" and r.output[0].content[0].type == "output_text"
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert 0 < r.usage.output_tokens <= 24


def test_stream_gives_the_same_text_in_the_documented_order(client):
    kwargs = dict(model="smollm2-135m", instructions="Answer briefly.", temperature=0, max_output_tokens=16,
                  input=[{"role": "developer", "content": "Be exact."}, {"role": "user", "content": QUESTION}])
    whole = client.responses.create(**kwargs)
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    n_deltas = types.count("response.output_text.delta")
    terminal = f"response.{whole.status}"
    assert types == [*LIFECYCLE, *["response.output_text.delta"] * n_deltas, *CLOSING, terminal]
    assert n_deltas >= 3  # token by token
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == whole.output_text == final.output_text  # greedy: the same tokens either way
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_small_max_output_tokens_is_incomplete(client):
    r = client.responses.create(model="smollm2-135m", input=QUESTION, temperature=0, max_output_tokens=3)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 3


def test_previous_response_id_continues_the_conversation(client):
    first = client.responses.create(model="smollm2-135m", input="My name is Ada.", temperature=0,
                                    max_output_tokens=8)
    second = client.responses.create(model="smollm2-135m", input="What is my name?", temperature=0,
                                     max_output_tokens=8, previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="smollm2-135m", input="x", previous_response_id="resp_unknown")
    assert err.value.body["param"] == "previous_response_id"


def test_refused_fields_are_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="smollm2-135m", input=QUESTION, background=True)
    assert err.value.body["param"] == "background"
