"""The real server with --embedding-model all-minilm-l6-v2 beside the default chat model, through the openai SDK."""

from __future__ import annotations

import base64
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest

from harness.sut import free_port, launched

from .conftest import DEFAULT_MODEL

pytestmark = pytest.mark.integration

EMBEDDING_MODEL = "all-minilm-l6-v2"

# (sentence, paraphrase, unrelated sentence)
TRIPLES = [
    ("A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."),
    ("The cat sits on the mat.", "A cat is sitting on a rug.", "Interest rates rose again this quarter."),
    ("How do I reset my password?", "I forgot my password, how can I change it?", "The train leaves at noon."),
    ("It is raining heavily outside.", "There is a downpour outside.", "She plays the violin beautifully."),
    ("The children are playing football.", "Kids are playing soccer.", "The server returned an error."),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("embedding-server") / "server.log"
    argv = [sys.executable, "-m", "serving", "serve", "--model", DEFAULT_MODEL,
            "--embedding-model", EMBEDDING_MODEL, "--port", str(port), "--max-concurrency", "4"]
    with launched(argv, port=port, log_path=log_path, ready_timeout_s=1800) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer():
    """The model's own tokenizer, from the folder the server resolved (a cache hit by now)."""
    from transformers import AutoTokenizer

    from serving.catalog import default_cache_dir, resolve_model

    folder = resolve_model(EMBEDDING_MODEL, cache_dir=default_cache_dir(), dtype="float32").path
    return AutoTokenizer.from_pretrained(str(folder))


def vectors(response) -> np.ndarray:
    return np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)], dtype=np.float64)


def test_paraphrases_score_higher_than_unrelated_sentences(client):
    flat = [s for triple in TRIPLES for s in triple]
    v = vectors(client.embeddings.create(model=EMBEDDING_MODEL, input=flat, encoding_format="float"))
    assert v.shape == (len(flat), 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    for i, (a, b, c) in enumerate(TRIPLES):
        anchor, paraphrase, unrelated = v[3 * i], v[3 * i + 1], v[3 * i + 2]
        close, far = anchor @ paraphrase, anchor @ unrelated
        print(f"{a!r}: paraphrase {close:.3f}, unrelated {far:.3f}")
        assert close > far + 0.2, (a, close, far)


def test_base64_carries_the_same_floats(client):
    texts = ["base64 and float must agree", "to the last bit"]
    floats = vectors(client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float"))
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    decoded_by_sdk = vectors(client.embeddings.create(model=EMBEDDING_MODEL, input=texts))
    raw = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="base64")
    decoded_here = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in raw.data])
    np.testing.assert_array_equal(decoded_by_sdk, floats)
    np.testing.assert_array_equal(decoded_here, floats)


def test_token_ids_equal_the_text_they_came_from(client, tokenizer):
    texts = ["Token ids and text give one vector.", "A second, longer sentence with more words in it."]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    from_text = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    from_ids = client.embeddings.create(model=EMBEDDING_MODEL, input=ids, encoding_format="float")
    one_list = client.embeddings.create(model=EMBEDDING_MODEL, input=ids[0], encoding_format="float")
    np.testing.assert_allclose(vectors(from_ids), vectors(from_text), atol=1e-6)
    np.testing.assert_allclose(vectors(one_list)[0], vectors(from_text)[0], atol=1e-6)
    assert from_ids.usage.prompt_tokens == from_text.usage.prompt_tokens


def test_usage_counts_every_token_the_model_sees(client, tokenizer):
    texts = ["short", "a somewhat longer sentence to count", "Ünïcödé and 日本語 text"]
    r = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    expected = sum(len(tokenizer(t)["input_ids"]) for t in texts)  # [CLS] and [SEP] included
    assert r.usage.prompt_tokens == r.usage.total_tokens == expected
    assert r.model == EMBEDDING_MODEL and r.object == "list"
    assert [d.object for d in r.data] == ["embedding"] * 3 and [d.index for d in r.data] == [0, 1, 2]


def test_models_lists_both(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == DEFAULT_MODEL and EMBEDDING_MODEL in ids
    assert client.models.retrieve(EMBEDDING_MODEL).id == EMBEDDING_MODEL
    assert client.models.retrieve(DEFAULT_MODEL).id == DEFAULT_MODEL


@pytest.mark.parametrize("kwargs, needle", [
    ({"input": ""}, "empty string"),
    ({"input": []}, "empty list"),
    ({"input": "word " * 600}, "takes at most 512 tokens"),
    ({"input": [[101, 40000]]}, "outside the vocabulary"),
    ({"input": "fine", "dimensions": 128}, "384-dimensional"),
])
def test_bad_input_is_a_bad_request(client, kwargs, needle):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDING_MODEL, encoding_format="float", **kwargs)
    assert needle in caught.value.message


def test_concurrent_clients_and_a_chat_get_their_own_answers(client, server):
    texts = [f"Sentence number {i} about {topic}." for i, topic in
             enumerate(["rivers", "mountains", "bread", "violins", "trains", "clouds", "ships", "tea"])]
    alone = vectors(client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float"))

    def one(i):
        return vectors(client.embeddings.create(model=EMBEDDING_MODEL, input=texts[i], encoding_format="float"))[0]

    with ThreadPoolExecutor(max_workers=len(texts) + 1) as pool:
        chat = pool.submit(client.chat.completions.create, model=DEFAULT_MODEL, max_tokens=8,
                           messages=[{"role": "user", "content": "Say hello."}])
        together = list(pool.map(one, range(len(texts))))
        assert chat.result().choices[0].message.content
    np.testing.assert_allclose(np.stack(together), alone, atol=1e-5)
    worker = server.health()["embedding"]["worker"]
    assert worker["peak_batch"] >= len(texts)  # the one request with eight inputs ran as one batch
    assert worker["errors"] == 0 and worker["pending_inputs"] == 0
