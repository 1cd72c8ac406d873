"""Vision detection from metadata, the image prompter, and the tiny qwen2_vl builder (real mlx-vlm, seconds)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from serving.engine.loop import EngineSettings
from serving.engine.request import GenerationRequest
from serving.vision import vision_engine_for
from serving.vision.detect import modality
from serving.vision.prompt import ImagePromptError, VisionPrompter


def folder_with(tmp_path, name="model", **files):
    folder = tmp_path / name
    folder.mkdir()
    for filename, data in files.items():
        (folder / f"{filename}.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("files, vision", [
    ({"config": {"model_type": "llava", "vision_config": {"hidden_size": 8}}}, True),
    ({"config": {"model_type": "x"}, "preprocessor_config": {"image_processor_type": "SiglipImageProcessor"}}, True),
    ({"config": {"model_type": "x"}, "processor_config": {"image_processor": {"patch_size": 14}}}, True),
    ({"config": {"model_type": "llama"}}, False),
    ({"config": {"model_type": "llama", "vision_config": {}}}, False),
    # A speech model's feature extractor is not an image processor.
    ({"config": {"model_type": "whisper"}, "preprocessor_config": {"feature_extractor_type": "WhisperFeatureExtractor"}},
     False),
])
def test_vision_is_read_from_metadata(tmp_path, files, vision):
    assert modality(folder_with(tmp_path, **files)).vision is vision


def test_a_vision_sounding_name_is_not_enough(tmp_path):
    folder = folder_with(tmp_path, "Qwen2-VL-2B-Instruct", config={"model_type": "qwen2"})
    assert not modality(folder).vision
    assert vision_engine_for(folder, EngineSettings()) is None


class Counter:
    def num_image_tokens(self, height, width):
        return width // 10

    def __call__(self, images):
        return {"pixel_values": np.ones((len(images), 2)), "image_grid_thw": np.array([[1, 1, 1]] * len(images))}


def test_prepare_expands_each_placeholder_for_its_own_image():
    prompter = VisionPrompter(Counter(), image_token_id=9, image_token="<img>")
    images = [Image.new("RGB", (20, 5)), Image.new("RGB", (30, 5))]
    tokens, arrays = prompter.prepare([1, 9, 2, 9, 3], images)
    assert tokens == [1, 9, 9, 2, 9, 9, 9, 3]
    assert arrays.count == 2 and arrays.pixel_values.shape == (2, 2) and "image_grid_thw" in arrays.extra


@pytest.mark.parametrize("tokens, n_images", [([1, 9, 9], 1), ([1, 2], 1), ([9], 0)])
def test_placeholders_must_match_the_images(tokens, n_images):
    prompter = VisionPrompter(Counter(), image_token_id=9, image_token="<img>")
    with pytest.raises(ImagePromptError, match="placeholder"):
        prompter.prepare(tokens, [Image.new("RGB", (10, 10))] * n_images)


def test_a_processor_that_cannot_count_tokens_is_refused_for_images_only():
    class Fixed:
        def __call__(self, images):
            return {}

    prompter = VisionPrompter(Fixed(), image_token_id=9)
    assert prompter.prepare([1, 2], []) == ([1, 2], None)
    with pytest.raises(ImagePromptError, match="cannot say how many tokens"):
        prompter.prepare([9], [Image.new("RGB", (10, 10))])


# ---- the tiny model, built and run for real ----------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from serving.vision.tiny_model import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-vlm")


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_tiny_model_is_deterministic_and_complete(tiny, tmp_path):
    from serving.vision.tiny_model import build_tiny_vlm

    again = build_tiny_vlm(tmp_path / "again")
    assert _digests(tiny) == _digests(again)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "preprocessor_config.json", "processor_config.json", "chat_template.json"):
        assert (tiny / name).is_file()
    config = json.loads((tiny / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl" and config["vision_config"]
    assert modality(tiny).vision


def test_the_tiny_model_loads_offline_and_generates_from_an_image(tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = vision_engine_for(tiny, EngineSettings())
    engine.start(timeout_s=120)
    try:
        tok = engine.tokenizer
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert "<|vision_start|><|image_pad|><|vision_end|>What is this?" in text
        tokens, arrays = engine.vision.prepare(tok.encode(text, add_special_tokens=False),
                                               [Image.new("RGB", (80, 64), (10, 200, 30))])
        assert tokens.count(engine.vision.image_token_id) == 6  # 84x56 after resizing: 6x4 patches, merged 2x2
        request = GenerationRequest(prompt_tokens=tokens, max_tokens=5, media=arrays)
        evs = list(engine.submit(request).iter_events())
        assert evs[-1].reason in ("length", "eos") and evs[-1].usage.prompt_tokens == len(tokens)
        assert 1 <= evs[-1].usage.completion_tokens <= 5
        again = list(engine.submit(request).iter_events())  # greedy: the same tokens again
        assert [e.token_ids for e in again[:-1]] == [e.token_ids for e in evs[:-1]]
    finally:
        engine.stop()
