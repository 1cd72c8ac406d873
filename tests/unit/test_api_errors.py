"""Every bad input gets a 4xx in OpenAI's error shape, and the app keeps serving."""

import json

import pytest
from falcon import testing

from serving.app import create_app
from serving.config import ServerConfig

from .fakes import FakeEngine, served

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


def client(**cfg):
    config = ServerConfig(**cfg)
    return testing.TestClient(create_app(config, FakeEngine(), served(), {"backend": "fake"}))


def assert_openai_error(result, status, *, param=None, code=None):
    assert result.status_code == status, result.text
    err = result.json["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param
    if code is not None:
        assert err["code"] == code


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "", "\xff\xfe"])
def test_malformed_json_is_400(raw):
    assert_openai_error(client().simulate_post(CHAT, body=raw), 400)


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": OK_MESSAGES, "temperature": 5}, "temperature"),
        ({"messages": OK_MESSAGES, "temperature": "hot"}, "temperature"),
        ({"messages": OK_MESSAGES, "top_p": 0}, "top_p"),
        ({"messages": OK_MESSAGES, "n": 2}, "n"),
        ({"messages": OK_MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": OK_MESSAGES, "logit_bias": {"x": 1}}, "logit_bias"),
        ({"messages": OK_MESSAGES, "logit_bias": {"999999": 1}}, "logit_bias"),
        ({"messages": OK_MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"messages": OK_MESSAGES, "max_tokens": -5}, "max_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content.0"),
    ],
)
def test_invalid_fields_are_400_with_param(body, param):
    assert_openai_error(client().simulate_post(CHAT, json=body), 400, param=param)


def test_prompt_longer_than_context_is_400():
    long = [{"role": "user", "content": "x" * 500}]
    assert_openai_error(client().simulate_post(CHAT, json={"messages": long}), 400,
                        code="context_length_exceeded")


def test_template_rejection_is_400():
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "boom"}]
    assert_openai_error(client().simulate_post(CHAT, json={"messages": msgs}), 400, param="messages")


def test_unknown_model_under_strict_is_404():
    c = client(strict_model_id=True)
    assert_openai_error(c.simulate_post(CHAT, json={"model": "gpt-9", "messages": OK_MESSAGES}), 404,
                        code="model_not_found")
    assert c.simulate_post(CHAT, json={"model": "alias", "messages": OK_MESSAGES}).status_code == 200


def test_unknown_model_without_strict_is_served():
    assert client().simulate_post(CHAT, json={"model": "gpt-9", "messages": OK_MESSAGES}).status_code == 200


def test_unknown_route_and_method_use_openai_shape():
    c = client()
    assert_openai_error(c.simulate_get("/v1/nope"), 404)
    assert_openai_error(c.simulate_get(CHAT), 405)


def test_completions_bad_prompts():
    c = client()
    assert_openai_error(c.simulate_post("/v1/completions", json={}), 400, param="prompt")
    assert_openai_error(c.simulate_post("/v1/completions", json={"prompt": ["a", "b"]}), 400, param="prompt")
    assert_openai_error(c.simulate_post("/v1/completions", json={"prompt": [70000]}), 400, param="prompt")


def test_api_key_required_except_health():
    c = client(api_key="sekret")
    assert_openai_error(c.simulate_post(CHAT, json={"messages": OK_MESSAGES}), 401, code="invalid_api_key")
    assert_openai_error(c.simulate_get("/v1/models", headers={"Authorization": "Bearer nope"}), 401)
    assert c.simulate_get("/health").status_code == 200
    assert c.simulate_get("/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
    assert c.simulate_get("/v1/models", headers={"x-api-key": "sekret"}).status_code == 200


def test_ceiling_reject_and_clamp():
    body = {"messages": OK_MESSAGES, "max_tokens": 10_000}
    assert_openai_error(client(over_ceiling="reject", max_tokens_ceiling=8).simulate_post(CHAT, json=body),
                        400, param="max_tokens")
    c = client(max_tokens_ceiling=2, max_tokens_default=2)
    result = c.simulate_post(CHAT, json=body)
    assert result.status_code == 200
    assert result.json["choices"][0]["finish_reason"] == "length"
    assert result.json["usage"]["completion_tokens"] == 2


def test_engine_error_is_500_in_openai_shape():
    app = create_app(ServerConfig(), FakeEngine(fail=True), served(), {})
    assert_openai_error(testing.TestClient(app).simulate_post(CHAT, json={"messages": OK_MESSAGES}), 500)


def test_server_keeps_serving_after_bad_input():
    c = client()
    c.simulate_post(CHAT, body="{oops")
    ok = c.simulate_post(CHAT, json={"messages": OK_MESSAGES})
    assert ok.status_code == 200
    assert ok.json["choices"][0]["message"]["content"] == "Hello, world"
    assert json.loads(c.simulate_get("/health").text)["status"] == "ok"
