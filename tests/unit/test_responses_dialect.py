"""The Responses dialect against a fake engine: input forms, the store, refusals and the event stream."""

from __future__ import annotations

import json

import pytest
from falcon import testing
from openai.types.responses import Response

from serving.api.responses import ResponseStore
from suites.contracts.conformance import validate
from serving.api.responses.items import FunctionCallOutput, messages
from serving.api.responses.schemas import ResponsesRequest
from serving.app import create_app
from serving.config import ServerConfig

from .fakes import FakeEngine, served

URL = "/v1/responses"


def assert_event_fits(event: dict) -> None:
    # Strict: a field the SDK's type lacks is a failure too, as in the contracts suite.
    assert validate("openai", "ResponseStreamEvent", event) == []


def client(engine=None, **cfg):
    engine = engine or FakeEngine()
    return testing.TestClient(create_app(ServerConfig(**cfg), engine, served(context_length=4096), {})), engine


def prompt(engine) -> str:
    return engine.tokenizer.decode(engine.requests[-1].prompt_tokens)


def sdk_response(body: dict) -> Response:
    """Validate against the official SDK's type, strictly (the SDK itself parses leniently)."""
    return Response.model_validate(body, strict=True)


def stream_events(result) -> list[dict]:
    assert result.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in result.text.split("\n\n"):
        if not block:
            continue
        event_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
        out.append(data)
    return out


def test_string_input_gives_a_completed_response_the_sdk_parses():
    c, engine = client()
    body = c.simulate_post(URL, json={"input": "hi", "model": "fake-model"}).json
    assert prompt(engine) == "<user>hi<assistant>"
    parsed = sdk_response(body)
    assert parsed.status == "completed" and parsed.incomplete_details is None
    assert parsed.output_text == "Hello, world" and "output_text" not in body
    assert body["id"].startswith("resp_") and body["output"][0]["id"].startswith("msg_")
    assert body["usage"] == {"input_tokens": len("<user>hi<assistant>"), "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                             "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": len("<user>hi<assistant>") + 3}


def test_message_forms_instructions_first_and_developer_as_system():
    c, engine = client()
    result = c.simulate_post(URL, json={"instructions": "rules", "input": [
        {"role": "developer", "content": "dev one"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev two"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"role": "user", "content": "go"}]})
    assert result.status_code == 200
    assert prompt(engine) == "<system>rules<system>dev one<system>dev two<user>ab<assistant>ok<user>go<assistant>"


def test_function_calls_and_outputs_become_tool_calls_and_tool_messages():
    body = ResponsesRequest.model_validate({"input": [
        {"role": "user", "content": "weather?"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "noon"}]},
        {"type": "function_call", "call_id": "c3", "name": "time", "arguments": "{}"}]})
    assert messages(body.input) == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "checking", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}},
            {"id": "c2", "type": "function", "function": {"name": "time", "arguments": {}}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        {"role": "tool", "content": "noon", "tool_call_id": "c2"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c3", "type": "function", "function": {"name": "time", "arguments": {}}}]}]


def test_tool_output_reaches_the_template():
    c, engine = client()
    c.simulate_post(URL, json={"input": [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"}]})
    assert prompt(engine) == "<assistant><tool>42<assistant>"


@pytest.mark.parametrize("body, param", [
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:..."}]}]},
     "input.0.content.0"),
    ({"input": [{"type": "web_search_call", "id": "ws"}]}, "input.0"),
    ({"input": [{"type": "function_call", "name": "f"}]}, "input.0.function_call.call_id"),
    ({"input": []}, "input"),
    ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
    ({"input": "hi", "tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "top_logprobs": 2}, "top_logprobs"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi", "temperature": 3}, "temperature"),
])
def test_bad_or_unsupported_fields_are_400_naming_them(body, param):
    result = client()[0].simulate_post(URL, json=body)
    assert result.status_code == 400, result.text
    assert set(result.json["error"]) == {"message", "type", "param", "code"}
    assert result.json["error"]["param"] == param
    if "image" in json.dumps(body):
        assert "text only" in result.json["error"]["message"]


def test_max_output_tokens_goes_through_the_server_ceiling():
    result = client(max_tokens_ceiling=8, over_ceiling="reject")[0].simulate_post(
        URL, json={"input": "hi", "max_output_tokens": 9})
    assert result.status_code == 400 and result.json["error"]["param"] == "max_output_tokens"
    c, engine = client(max_tokens_default=7, max_tokens_ceiling=8)
    c.simulate_post(URL, json={"input": "hi"})
    assert engine.requests[-1].max_tokens == 7


def test_codex_shaped_request_is_accepted_and_echoed():
    tools = [{"type": "function", "name": "shell", "description": "run", "strict": False,
              "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}]
    c, engine = client()
    body = c.simulate_post(URL, json={
        "model": "anything", "instructions": "base", "tools": tools, "tool_choice": "auto",
        "parallel_tool_calls": False, "reasoning": {"effort": "medium", "summary": "auto"}, "store": False,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "text": {"verbosity": "low"},
        "metadata": {"a": "b"}, "temperature": 0.5, "top_p": 0.9,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}).json
    parsed = sdk_response(body)
    assert parsed.tools[0].name == "shell" and parsed.parallel_tool_calls is False
    assert (parsed.temperature, parsed.top_p, parsed.metadata) == (0.5, 0.9, {"a": "b"})
    assert engine.requests[-1].sampling.temperature == 0.5


def test_previous_response_id_continues_without_old_instructions():
    c, engine = client()
    first = c.simulate_post(URL, json={"input": "one", "instructions": "old rules"}).json
    second = c.simulate_post(URL, json={"input": "two", "previous_response_id": first["id"],
                                        "instructions": "new rules"}).json
    assert prompt(engine) == "<system>new rules<user>one<assistant>Hello, world<user>two<assistant>"
    assert second["previous_response_id"] == first["id"]
    c.simulate_post(URL, json={"input": "three", "previous_response_id": second["id"]})
    assert prompt(engine) == "<user>one<assistant>Hello, world<user>two<assistant>Hello, world<user>three<assistant>"


def test_unstored_and_unknown_responses_cannot_be_continued():
    c, _ = client()
    unstored = c.simulate_post(URL, json={"input": "one", "store": False}).json
    for rid in (unstored["id"], "resp_nope"):
        result = c.simulate_post(URL, json={"input": "x", "previous_response_id": rid})
        assert result.status_code == 400
        assert result.json["error"]["param"] == "previous_response_id"
        assert result.json["error"]["code"] == "previous_response_not_found"


def test_each_app_has_its_own_store():
    first = client()[0].simulate_post(URL, json={"input": "one"}).json
    other = client()[0].simulate_post(URL, json={"input": "x", "previous_response_id": first["id"]})
    assert other.status_code == 400


def test_store_forgets_the_least_recently_used():
    store = ResponseStore(capacity=2)
    store.put("a", [1])
    store.put("b", [2])
    assert store.get("a") == [1]  # a is now the most recent
    store.put("c", [3])
    assert store.get("b") is None and store.get("a") == [1] and store.get("c") == [3] and len(store) == 2


def test_stream_events_are_typed_numbered_and_in_order():
    result = client()[0].simulate_post(URL, json={"input": "hi", "stream": True})
    events = stream_events(result)
    for event in events[:-1]:  # the last is checked by sdk_response below
        assert_event_fits(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * 3, "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello, world"
    assert len({e["item_id"] for e in events if "item_id" in e}) == 1
    final = sdk_response(events[-1]["response"])
    assert final.output_text == "Hello, world" and final.id == events[0]["response"]["id"]


def test_length_limit_is_incomplete_whole_and_streamed():
    c, _ = client()
    body = c.simulate_post(URL, json={"input": "hi", "max_output_tokens": 2}).json
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["output"][0]["content"][0]["text"] == "Hello, "
    events = stream_events(c.simulate_post(URL, json={"input": "hi", "max_output_tokens": 2, "stream": True}))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"


def test_empty_answer_still_has_its_message_item():
    events = stream_events(client(FakeEngine(pieces=()))[0].simulate_post(URL, json={"input": "hi", "stream": True}))
    types = [e["type"] for e in events]
    assert types[2:] == ["response.output_item.added", "response.content_part.added", "response.output_text.done",
                         "response.content_part.done", "response.output_item.done", "response.completed"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_failure_mid_stream_is_error_then_failed_and_whole_is_500():
    c, _ = client(FakeEngine(fail=True))
    events = stream_events(c.simulate_post(URL, json={"input": "hi", "stream": True}))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    for event in events[-2:]:
        assert_event_fits(event)
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert events[-2]["code"] == "engine_error"
    whole = c.simulate_post(URL, json={"input": "hi"})
    assert whole.status_code == 500 and whole.json["error"]["type"] == "server_error"


def test_function_call_item_events_fit_the_sdk():
    call = FunctionCallOutput(1, name="shell")
    events = [*call.opened(), *call.delta('{"cmd":'), *call.delta('"ls"}'), *call.closed("completed")]
    for n, event in enumerate(events):
        assert_event_fits({**event, "sequence_number": n})
    assert events[-1]["item"]["arguments"] == '{"cmd":"ls"}'
    assert [e["type"] for e in events] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done"]
