"""POST /v1/embeddings on a fake model: OpenAI's shapes, refusals, model ids, and /v1/models."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from falcon import testing

from serving.app import create_app
from serving.config import ServerConfig
from serving.embeddings import EmbeddingBusy, EmbeddingDown, EmbeddingFailed, EmbeddingTimeout

from .embedding_fakes import CLS, SEP, FakeText, fake_service, vector_of
from .fakes import FakeEngine, served

ROUTE = "/v1/embeddings"


@pytest.fixture
def service():
    svc = fake_service()
    yield svc
    svc.stop()


def client(service, **cfg):
    return testing.TestClient(create_app(ServerConfig(**cfg), FakeEngine(), served(), {}, embeddings=service))


def post(service, body, **cfg):
    return client(service, **cfg).simulate_post(ROUTE, json=body)


def error_of(result) -> dict:
    body = result.json
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_one_string_in_openai_shape(service):
    result = post(service, {"model": "fake-embed", "input": "hi"})
    assert result.status_code == 200
    body = result.json
    assert body["object"] == "list" and body["model"] == "fake-embed"
    [item] = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert item["embedding"] == pytest.approx(vector_of([CLS, *FakeText.ids("hi"), SEP]).tolist())
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


def test_a_list_of_strings_keeps_its_order(service):
    texts = ["a much longer one", "b", "mid size"]
    body = post(service, {"input": texts}).json
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    for text, item in zip(texts, body["data"]):
        assert item["embedding"] == pytest.approx(vector_of([CLS, *FakeText.ids(text), SEP]).tolist())
    assert body["usage"]["prompt_tokens"] == sum(len(t) + 2 for t in texts)


def test_token_ids_equal_the_text_they_spell(service):
    text = post(service, {"input": "hello"}).json
    ids = post(service, {"input": FakeText.ids("hello")}).json
    framed = post(service, {"input": [[CLS, *FakeText.ids("hello"), SEP]]}).json
    assert ids["data"][0]["embedding"] == text["data"][0]["embedding"] == framed["data"][0]["embedding"]
    assert ids["usage"] == text["usage"] == framed["usage"]


def test_lists_of_token_ids(service):
    body = post(service, {"input": [[5, 6], [7]]}).json
    assert len(body["data"]) == 2 and body["usage"]["prompt_tokens"] == 4 + 3


def test_base64_is_little_endian_float32_of_the_same_vector(service):
    floats = post(service, {"input": ["x", "yz"], "encoding_format": "float"}).json
    packed = post(service, {"input": ["x", "yz"], "encoding_format": "base64"}).json
    for f, b in zip(floats["data"], packed["data"]):
        assert isinstance(b["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert decoded.tolist() == f["embedding"]


def test_dimensions_equal_to_the_model_is_accepted_and_any_other_refused(service):
    assert post(service, {"input": "a", "dimensions": 4}).status_code == 200
    result = post(service, {"input": "a", "dimensions": 2})
    assert result.status_code == 400
    err = error_of(result)
    assert err["param"] == "dimensions" and "4-dimensional" in err["message"]
    assert post(service, {"input": "a", "dimensions": 0}).status_code == 400


@pytest.mark.parametrize("body, needle", [
    ({"input": ""}, "empty string"),
    ({"input": []}, "empty list"),
    ({"input": ["ok", ""]}, "input[1] is an empty string"),
    ({"input": [[]]}, "input[0] is an empty list of token ids"),
    ({"input": ["x"] * 2049}, "at most 2048"),
    ({"input": "x" * 23}, "at most 24 tokens"),
    ({"input": [[3] * 23]}, "input[0] is 25 tokens long"),
    ({"input": [3, 256]}, "token id 256 is outside the vocabulary (0 to 255)"),
    ({"input": [[3], [-1]]}, "input[1][0]: token id -1 is outside"),
    ({"input": [[3, 1.5]]}, "input[0][1] is a number"),
    ({"input": [[3, True]]}, "input[0][1] is a boolean"),
    ({"input": ["a", 3]}, "mixes integer, string"),
    ({"input": [True]}, "mixes boolean"),
    ({"input": {"text": "a"}}, "not an object"),
    ({"input": None}, "not null"),
    ({"input": 7}, "not an integer"),
    ({}, "input: missing required field"),
    ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "a", "dimensions": "big"}, "dimensions"),
])
def test_bad_input_is_a_clear_400(service, body, needle):
    result = post(service, body)
    assert result.status_code == 400, result.text
    err = error_of(result)
    assert err["type"] == "invalid_request_error"
    assert needle in err["message"]


def test_an_input_over_the_limit_names_it_and_the_limit(service):
    err = error_of(post(service, {"input": ["ok", "y" * 30]}))
    assert err["code"] == "context_length_exceeded" and err["param"] == "input"
    assert "input[1] is 32 tokens long" in err["message"] and "fake-embed takes at most 24" in err["message"]


def test_nothing_reaches_the_model_when_any_input_is_bad(service):
    post(service, {"input": ["fine", ""]})
    assert service.stats()["requests"] == 0


def test_any_model_id_is_served_unless_strict(service):
    loose = post(service, {"model": "text-embedding-3-small", "input": "a"})
    assert loose.status_code == 200 and loose.json["model"] == "fake-embed"
    strict = post(service, {"model": "text-embedding-3-small", "input": "a"}, strict_model_id=True)
    assert strict.status_code == 404
    err = error_of(strict)
    assert err["code"] == "model_not_found" and "fake-embed" in err["message"]
    # The chat model's id is not an embedding model's.
    assert post(service, {"model": "fake-model", "input": "a"}, strict_model_id=True).status_code == 404
    assert post(service, {"model": "fake-embed", "input": "a"}, strict_model_id=True).status_code == 200


def test_chat_under_strict_ids_does_not_answer_to_the_embedding_model(service):
    c = client(service, strict_model_id=True)
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert c.simulate_post("/v1/chat/completions", json={**chat, "model": "fake-embed"}).status_code == 404
    assert c.simulate_post("/v1/chat/completions", json={**chat, "model": "fake-model"}).status_code == 200


def test_without_an_embedding_model_the_route_says_how_to_get_one():
    c = testing.TestClient(create_app(ServerConfig(), FakeEngine(), served(), {}))
    result = c.simulate_post(ROUTE, json={"input": "a"})
    assert result.status_code == 404
    err = error_of(result)
    assert "--embedding-model all-minilm-l6-v2" in err["message"] and err["code"] == "model_not_found"
    assert result.headers["x-should-retry"] == "false"
    assert [m["id"] for m in c.simulate_get("/v1/models").json["data"]] == ["fake-model", "alias"]
    assert "embedding" not in c.simulate_get("/health").json


def test_models_list_and_find_both(service):
    c = client(service)
    assert [m["id"] for m in c.simulate_get("/v1/models").json["data"]] == ["fake-model", "alias", "fake-embed"]
    assert c.simulate_get("/v1/models/fake-embed").json["id"] == "fake-embed"
    assert c.simulate_get("/v1/models/fake-model").json["id"] == "fake-model"
    assert c.simulate_get("/v1/models/nope").status_code == 404
    anthropic = c.simulate_get("/v1/models", headers={"anthropic-version": "2023-06-01"}).json
    assert anthropic["last_id"] == "fake-embed"


def test_health_reports_the_embedding_model_and_its_worker(service):
    post(service, {"input": ["a", "b"]})
    health = client(service).simulate_get("/health").json
    assert health["embedding"]["id"] == "fake-embed" and health["embedding"]["dimensions"] == 4
    assert health["embedding"]["worker"]["inputs"] == 2 and health["status"] == "ok"
    assert health["config"]["embedding_model"] is None  # the fake was injected, not configured


def test_the_api_key_covers_the_route(service):
    c = client(service, api_key="sekrit")
    assert c.simulate_post(ROUTE, json={"input": "a"}).status_code == 401
    ok = c.simulate_post(ROUTE, json={"input": "a"}, headers={"Authorization": "Bearer sekrit"})
    assert ok.status_code == 200


class _Raising:
    def __init__(self, service, exc):
        self.info, self.text, self.exc = service.info, service.text, exc
        self.alive = True

    def embed(self, sequences, *, timeout_s=None):
        raise self.exc

    def stats(self):
        return {}


@pytest.mark.parametrize("exc, status, retry", [
    (EmbeddingBusy("full"), 429, "true"),
    (EmbeddingDown("gone"), 503, "true"),
    (EmbeddingTimeout("slow"), 504, "true"),
    (EmbeddingFailed("boom"), 500, "true"),
])
def test_worker_failures_become_openai_errors(service, exc, status, retry):
    result = post(_Raising(service, exc), {"input": "a"})
    assert result.status_code == status and result.headers["x-should-retry"] == retry
    assert str(exc) in error_of(result)["message"]
