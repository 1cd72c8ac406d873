"""SSE framing of chat and completions against a fake engine."""

import json

import pytest

from falcon import testing

from serving.app import create_app
from serving.config import ServerConfig

from .fakes import FakeEngine, served


def events(result):
    lines = [l for l in result.text.split("\n\n") if l]
    assert all(l.startswith("data: ") for l in lines)
    payloads = [l[len("data: "):] for l in lines]
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


def client():
    return testing.TestClient(create_app(ServerConfig(), FakeEngine(), served(), {}))


def test_chat_stream_has_role_deltas_finish_and_usage():
    result = client().simulate_post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}})
    assert result.headers["content-type"].startswith("text/event-stream")
    chunks = events(result)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello, world"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-1]["usage"]["prompt_tokens"] == len("<user>hi<assistant>")
    assert len({c["id"] for c in chunks}) == 1


def test_completion_stream_without_usage_and_with_echo():
    result = client().simulate_post("/v1/completions", json={"prompt": "Say: ", "stream": True, "echo": True})
    chunks = events(result)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Say: Hello, world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


def test_non_stream_completion_shape():
    body = client().simulate_post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).json
    assert body["object"] == "text_completion"
    assert body["choices"][0] == {"index": 0, "text": "Hello, ", "logprobs": None, "finish_reason": "length"}
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                             "prompt_tokens_details": {"cached_tokens": 0}}


def test_models_lists_public_id_first():
    ids = [m["id"] for m in client().simulate_get("/v1/models").json["data"]]
    assert ids == ["fake-model", "alias"]


@pytest.mark.parametrize("route, body", [
    ("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ("responses", {"model": "m", "input": "hi", "stream": True}),
])
def test_openai_streams_send_keepalive_comments_while_the_prompt_prefills(route, body):
    import threading

    from serving.api import respond
    from serving.api.dialect import ServeContext
    from serving.api.openai import CHAT
    from serving.api.responses import RESPONSES
    from serving.config import ServerConfig
    from serving.engine.request import Finished, RequestHandle, Usage

    from .fakes import FakeTokenizer, served

    dialect = {"chat": CHAT, "responses": RESPONSES}[route]
    prepared = dialect.adapt(body, ServeContext(FakeTokenizer(), served(), ServerConfig()))
    handle = RequestHandle(prepared.request, lambda h: None)
    threading.Timer(0.6, handle.put, (Finished("eos", Usage(3, 1)),)).start()
    pieces = list(respond.stream(handle, prepared, idle_s=0.1))
    assert pieces.count(b": keep-alive\n\n") >= 2
    assert all(p.startswith((b"data: ", b"event: ", b": keep-alive")) for p in pieces)


def test_errors_tell_the_sdks_whether_to_retry():
    c = client()
    assert c.simulate_post("/v1/chat/completions", json={"messages": []}).headers["x-should-retry"] == "false"
    assert c.simulate_get("/v1/models/nope").headers["x-should-retry"] == "false"
    keyed = testing.TestClient(create_app(ServerConfig(api_key="k"), FakeEngine(), served(), {}))
    assert keyed.simulate_post("/v1/messages", json={}).headers["x-should-retry"] == "false"
