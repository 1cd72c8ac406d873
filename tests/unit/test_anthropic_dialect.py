"""The Anthropic Messages dialect against a fake engine: prompts, refusals, error shape, stream order."""

from __future__ import annotations

import json
import threading

import pytest
from falcon import testing

from serving.api import anthropic, respond
from serving.api.anthropic.blocks import ContentBlocks
from serving.api.anthropic.messages import error_body
from serving.api.anthropic.prompt import neutral_messages
from serving.api.anthropic.schemas import PromptFields
from serving.api.dialect import ServeContext
from serving.api.errors import EngineUnavailable, GenerationTimeout
from serving.app import create_app
from serving.config import ServerConfig
from serving.engine.request import EngineBusy, Finished, RequestHandle, StepOutput, Usage

from .fakes import FakeEngine, FakeTokenizer, served

MESSAGES = "/v1/messages"
HI = [{"role": "user", "content": "hi"}]


def client(engine=None, **cfg):
    return testing.TestClient(create_app(ServerConfig(**cfg), engine or FakeEngine(), served(context_length=4096), {}))


def post(body, engine=None):
    return client(engine).simulate_post(MESSAGES, json={"model": "m", "max_tokens": 10, **body})


def prompt_of(engine: FakeEngine) -> str:
    return "".join(chr(t) for t in engine.requests[-1].prompt_tokens)


def sse(text: str) -> list[tuple[str, dict]]:
    frames = []
    for chunk in filter(None, text.split("\n\n")):
        event, data = chunk.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        frames.append((event[7:], json.loads(data[6:])))
    return frames


def assert_anthropic_error(result, status: int, kind: str) -> dict:
    assert result.status_code == status
    assert result.json["type"] == "error" and result.json["error"]["type"] == kind
    assert result.json["error"]["message"]
    return result.json["error"]


@pytest.mark.parametrize("system", [
    "Be brief.",
    [{"type": "text", "text": "Be", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "brief."}],
])
def test_system_string_or_blocks_with_cache_control(system):
    engine = FakeEngine()
    assert post({"system": system, "messages": HI}, engine).status_code == 200
    assert prompt_of(engine).startswith("<system>Be" + (" " if isinstance(system, str) else "\n") + "brief.<user>hi")


def test_system_role_inside_messages_is_folded_into_the_system_prompt():
    engine = FakeEngine()
    msgs = [{"role": "system", "content": [{"type": "text", "text": "Two."}]}, *HI]
    assert post({"system": "One.", "messages": msgs}, engine).status_code == 200
    assert prompt_of(engine) == "<system>One.\nTwo.<user>hi<assistant>"


def test_blocks_render_tool_calls_and_results_and_drop_thinking():
    engine = FakeEngine()
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "list"}, {"type": "text", "text": "files"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Sure."},
            {"type": "tool_use", "id": "t1", "name": "ls", "input": {"dir": "."}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a.py"}]},
            {"type": "text", "text": "and?"}]},
    ]
    assert post({"messages": msgs, "tools": [{"name": "ls", "input_schema": {}}], "tool_choice": {"type": "auto"},
                 "thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048,
                 "metadata": {"user_id": "u"},
                 "context_management": {"edits": []}, "output_config": {"effort": "high"},
                 "service_tier": "auto", "whatever": 1}, engine).status_code == 200
    # the fake template renders no tools, so under --tool-prompt auto they are not shown
    assert prompt_of(engine) == "<user>list\nfiles<assistant>Sure.<tool>a.py<user>and?<assistant>"


def test_tool_use_becomes_a_template_call_with_object_arguments():
    # Templates read arguments as an object (Qwen's applies `| tojson`): text would reach the
    # model escaped, `"{\"d\": 1}"`, and the model copies that form into its next call.
    body = PromptFields.model_validate({"model": "m", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "ls", "input": {"d": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]})
    assert neutral_messages(body)[1:] == [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "ls", "arguments": {"d": 1}}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "ok"}]


@pytest.mark.parametrize("content, param", [
    ([{"type": "text", "text": "see"}, {"type": "image", "source": {"type": "base64", "data": "x"}}],
     "messages.0.content.1"),
    ([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}],
     "messages.0.content.0.content.0"),
])
def test_images_are_refused_naming_the_block(content, param):
    error = assert_anthropic_error(post({"messages": [{"role": "user", "content": content}]}), 400,
                                   "invalid_request_error")
    assert param in error["message"] and "text only" in error["message"]


@pytest.mark.parametrize("body, needle", [
    ({"messages": HI, "max_tokens": None}, "max_tokens"),
    ({"messages": HI, "max_tokens": 0}, "max_tokens"),
    ({"messages": HI, "temperature": 1.5}, "temperature"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages.0.content.0"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
    ({"messages": [*HI, {"role": "assistant", "content": "Sure"}]}, "prefill"),
    ({"messages": HI, "tool_choice": {"type": "any"}}, "tool_choice"),
    ({"messages": HI, "tool_choice": {"type": "tool", "name": "ls"}}, "tool_choice"),
])
def test_malformed_or_unsupported_bodies_are_anthropic_400s(body, needle):
    raw = {"model": "m", "max_tokens": 10, **body}
    result = client().simulate_post(MESSAGES, json={k: v for k, v in raw.items() if v is not None})
    assert needle in assert_anthropic_error(result, 400, "invalid_request_error")["message"]


def test_bad_json_unknown_route_and_wrong_method_are_anthropic_shaped():
    c = client()
    assert_anthropic_error(c.simulate_post(MESSAGES, body=b"{nope", headers={"content-type": "application/json"}),
                           400, "invalid_request_error")
    assert_anthropic_error(c.simulate_post(MESSAGES + "/batches", json={}), 404, "not_found_error")
    assert c.simulate_get(MESSAGES).json["type"] == "error"
    assert_anthropic_error(c.simulate_post(MESSAGES, body=b"x" * (9 << 20),
                                           headers={"content-type": "application/json"}), 413, "request_too_large")


def test_busy_and_down_map_to_anthropic_error_types():
    class Busy(FakeEngine):
        def submit(self, request):
            raise EngineBusy("full")

    assert_anthropic_error(post({"messages": HI}, Busy()), 429, "rate_limit_error")
    assert [error_body(e("x"))["error"]["type"] for e in (EngineUnavailable, GenerationTimeout)] == [
        "overloaded_error", "api_error"]


def test_auth_failures_are_anthropic_shaped_and_both_key_headers_work():
    c = client(api_key="sekrit")
    body = {"model": "m", "max_tokens": 5, "messages": HI}
    for path in (MESSAGES, MESSAGES + "/count_tokens"):
        assert_anthropic_error(c.simulate_post(path, json=body), 401, "authentication_error")
        assert_anthropic_error(c.simulate_post(path, json=body, headers={"x-api-key": "wrong"}),
                               401, "authentication_error")
    for headers in ({"x-api-key": "sekrit"}, {"Authorization": "Bearer sekrit"}):
        assert c.simulate_post(MESSAGES, json=body, params={"beta": "true"},
                               headers={**headers, "anthropic-version": "2023-06-01",
                                        "anthropic-beta": "context-management-2025-06-27"}).status_code == 200


@pytest.mark.parametrize("reason, stop_string, expected", [
    ("eos", None, "end_turn"), ("length", None, "max_tokens"), ("stop", "5", "stop_sequence")])
def test_stop_reasons(reason, stop_string, expected):
    class Ending(FakeEngine):
        def submit(self, request):
            handle = RequestHandle(request, lambda h: None)
            handle.put(StepOutput((100,), "1, 2"), Finished(reason, Usage(len(request.prompt_tokens), 1),
                                                             stop_string=stop_string))
            return handle

    body = post({"messages": HI, "stop_sequences": ["5"]}, Ending()).json
    assert (body["stop_reason"], body["stop_sequence"]) == (expected, stop_string)


def test_whole_response_shape_and_usage():
    engine = FakeEngine(cached=4)
    body = post({"messages": HI}, engine).json
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["content"] == [{"type": "text", "text": "Hello, world"}]
    assert body["usage"] == {"input_tokens": len("<user>hi<assistant>"), "output_tokens": 3,
                             "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}


def test_max_tokens_goes_through_the_server_ceiling():
    engine = FakeEngine()
    body = {"model": "m", "max_tokens": 32000, "messages": HI}
    client(engine, max_tokens_default=8, max_tokens_ceiling=8).simulate_post(MESSAGES, json=body)
    assert engine.requests[-1].max_tokens == 8
    rejecting = client(max_tokens_default=8, max_tokens_ceiling=8, over_ceiling="reject")
    assert "max_tokens" in assert_anthropic_error(rejecting.simulate_post(MESSAGES, json=body), 400,
                                                  "invalid_request_error")["message"]


def test_stream_event_order_and_usage():
    result = post({"messages": HI, "stream": True}, FakeEngine(cached=4))
    assert result.headers["content-type"].startswith("text/event-stream")
    frames = sse(result.text)
    assert [name for name, _ in frames] == [
        "message_start", "ping", "content_block_start", *["content_block_delta"] * 3, "content_block_stop",
        "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in frames)
    start = frames[0][1]["message"]
    assert start["content"] == [] and start["usage"]["input_tokens"] == len("<user>hi<assistant>")
    assert frames[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert "".join(d["delta"]["text"] for _, d in frames[3:6]) == "Hello, world"
    delta = frames[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3 and delta["usage"]["cache_read_input_tokens"] == 4


def test_error_mid_stream_is_an_error_event():
    frames = sse(post({"messages": HI, "stream": True}, FakeEngine(fail=True)).text)
    assert frames[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})


def test_pings_while_the_prompt_prefills():
    ctx = ServeContext(FakeTokenizer(), served(), ServerConfig())
    prepared = anthropic.MESSAGES.adapt({"model": "m", "max_tokens": 5, "messages": HI, "stream": True}, ctx)
    handle = RequestHandle(prepared.request, lambda h: None)
    timer = threading.Timer(1.0, handle.put, (Finished("eos", Usage(3, 1)),))
    timer.start()
    names = [b.split(b"\n")[0] for b in respond.stream(handle, prepared, idle_s=0.1)]
    assert names[:2] == [b"event: message_start", b"event: ping"]
    assert names[2:-2].count(b"event: ping") >= 2 and names[-2:] == [b"event: message_delta", b"event: message_stop"]


def test_count_tokens_equals_input_tokens_and_is_not_the_generation_route():
    engine = FakeEngine()
    body = {"model": "m", "system": [{"type": "text", "text": "S"}],
            "messages": [{"role": "system", "content": "T"}, *HI]}
    counted = client(engine).simulate_post(MESSAGES + "/count_tokens", json=body)
    assert counted.status_code == 200 and not engine.requests
    assert counted.json["input_tokens"] == post({**body, "max_tokens": 5}).json["usage"]["input_tokens"]
    assert_anthropic_error(client().simulate_post(MESSAGES + "/count_tokens", json={"messages": HI}),
                           400, "invalid_request_error")


def test_content_blocks_leave_room_for_tool_use_and_thinking():
    blocks = ContentBlocks()
    frames = [*blocks.add("thinking", "hm"), *blocks.add("text", "Hi"),
              *blocks.add("tool_use", '{"d": ', id="t1", name="ls"), *blocks.add("tool_use", "1}"),
              *blocks.close()]
    assert [f.data["delta"]["type"] for f in frames if f.event == "content_block_delta"] == [
        "thinking_delta", "signature_delta", "text_delta", "input_json_delta", "input_json_delta"]
    assert blocks.content[0]["thinking"] == "hm" and len(blocks.content[0]["signature"]) == 64
    assert blocks.content[1:] == [{"type": "text", "text": "Hi"},
                                  {"type": "tool_use", "input": {"d": 1}, "id": "t1", "name": "ls"}]


def test_models_speak_anthropic_to_a_client_that_sends_anthropic_version():
    from anthropic.types import ModelInfo

    c = client(api_key="k")
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "k"}
    page = c.simulate_get("/v1/models", headers=headers).json
    assert page["has_more"] is False
    assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])
    for model in page["data"]:
        ModelInfo.model_validate_json(json.dumps(model), strict=True)
    one = c.simulate_get(f"/v1/models/{page['data'][0]['id']}", headers=headers).json
    assert one["type"] == "model"
    missing = c.simulate_get("/v1/models/nope", headers=headers)
    assert missing.status_code == 404 and missing.json["type"] == "error"
    assert missing.json["error"]["type"] == "not_found_error"
    unauthorised = c.simulate_get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert unauthorised.status_code == 401 and unauthorised.json["error"]["type"] == "authentication_error"
    # without the header: OpenAI's shape, as before
    assert c.simulate_get("/v1/models", headers={"authorization": "Bearer k"}).json["object"] == "list"
