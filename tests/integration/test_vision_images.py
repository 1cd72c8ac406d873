"""Images end to end: a real server on the tiny qwen2_vl the tests build, spoken to by the official SDKs.

No vision-language model ships offline, so the model has random weights: these
tests prove the contract (images accepted, prompts counted, limits enforced,
well-formed answers in every dialect), not the quality of any answer. The last
test checks the default text model refuses images.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import anthropic
import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from harness.sut import free_port, launched

pytestmark = pytest.mark.integration

MAX_IMAGE_BYTES = 100_000
MAX_IMAGE_PIXELS = 1_000_000
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def png_bytes(width=64, height=48, *, noise=False) -> bytes:
    if noise:
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", (width, height), (200, 30, 30))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


RED = png_bytes()


def ask(*parts, text="What is in this image?"):
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


def image_part(url=None):
    return {"type": "image_url", "image_url": {"url": url or data_url(RED)}}


@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-vlm") / "tiny-qwen2-vl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    built = subprocess.run([sys.executable, "-m", "serving", "models", "--build-tiny-vlm", str(folder)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["model_type"] == "qwen2_vl"
    port = free_port()
    argv = [sys.executable, "-m", "serving", "serve", "--model", str(folder), "--port", str(port),
            "--max-image-bytes", str(MAX_IMAGE_BYTES), "--max-image-pixels", str(MAX_IMAGE_PIXELS)]
    with launched(argv, port=port, log_path=folder.parent / "server.log", env=env, ready_timeout_s=300) as running:
        yield running


@pytest.fixture(scope="module")
def client(vlm_server):
    return openai.OpenAI(base_url=vlm_server.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def claude(vlm_server):
    return anthropic.Anthropic(base_url=vlm_server.base_url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def test_health_says_the_vision_engine_serves(vlm_server):
    engine = vlm_server.health()["engine"]
    assert engine["mode"] == "vision-serial" and engine["vision"] is True


def test_chat_with_an_image_gets_a_well_formed_answer_counting_image_tokens(client, model_id):
    with_image = client.chat.completions.create(model=model_id, messages=ask(image_part()), max_tokens=8)
    text_only = client.chat.completions.create(model=model_id, messages=ask(), max_tokens=8)
    choice = with_image.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    u = with_image.usage
    assert 1 <= u.completion_tokens <= 8 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    # 64x48 is resized to 56x56: 4x4 patches merged 2x2 = 4 image tokens, plus the vision start and end markers.
    assert u.prompt_tokens == text_only.usage.prompt_tokens + 6


def test_streamed_chat_with_an_image_matches_the_whole_answer(client, model_id):
    whole = client.chat.completions.create(model=model_id, messages=ask(image_part()), max_tokens=8)
    chunks = list(client.chat.completions.create(model=model_id, messages=ask(image_part()), max_tokens=8,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same tokens either way
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_responses_with_an_input_image(client, model_id):
    r = client.responses.create(model=model_id, max_output_tokens=8, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Describe this."}, {"type": "input_image", "image_url": data_url(RED)}]}])
    text_only = client.responses.create(model=model_id, max_output_tokens=8, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Describe this."}]}])
    assert r.status in ("completed", "incomplete") and isinstance(r.output_text, str)
    assert r.output[0].type == "message"
    assert r.usage.input_tokens == text_only.usage.input_tokens + 6 and 1 <= r.usage.output_tokens <= 8


def test_anthropic_sdk_with_an_image_block(claude, model_id):
    messages = [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(RED).decode()}},
        {"type": "text", "text": "What is this?"}]}]
    m = claude.messages.create(model=model_id, max_tokens=8, messages=messages)
    assert m.role == "assistant" and m.stop_reason in ("end_turn", "max_tokens")
    assert all(block.type == "text" for block in m.content)
    counted = claude.messages.count_tokens(model=model_id, messages=messages)
    assert counted.input_tokens == m.usage.input_tokens
    with claude.messages.stream(model=model_id, max_tokens=8, messages=messages) as stream:
        final = stream.get_final_message()
    assert final.usage.input_tokens == m.usage.input_tokens


def test_text_only_requests_work_on_the_vision_model(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Hello"}],
                                       max_tokens=5, stop=["\n"])
    assert isinstance(r.choices[0].message.content, str) and r.usage.completion_tokens <= 5


def test_an_http_image_url_is_refused(client, model_id):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model_id, max_tokens=4,
                                       messages=ask(image_part("http://example.com/cat.png")))
    assert err.value.status_code == 400 and "--allow-remote-media" in err.value.message


@pytest.mark.parametrize("image, what", [
    (png_bytes(256, 256, noise=True), "bytes"),  # about 200 kB of noise, over --max-image-bytes
    (png_bytes(2000, 2000), "pixels"),  # 4 M pixels in a few kB, over --max-image-pixels
])
def test_a_too_large_image_is_413(client, model_id, image, what):
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=model_id, max_tokens=4, messages=ask(image_part(data_url(image))))
    assert err.value.status_code == 413 and f"--max-image-{what}" in err.value.message


def test_a_non_image_is_refused(client, model_id):
    with pytest.raises(openai.BadRequestError, match="not an image"):
        client.chat.completions.create(model=model_id, max_tokens=4,
                                       messages=ask(image_part("data:image/png;base64,aGVsbG8gd29ybGQ=")))


def test_tools_with_an_image_give_a_well_formed_answer(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=ask(image_part(), text="Weather where this is?"),
                                       tools=WEATHER, max_tokens=16)
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    for call in choice.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)


def test_a_forced_tool_call_with_an_image_comes_back_as_a_call(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=ask(image_part(), text="Weather where this is?"),
                                       tools=WEATHER, tool_choice="required", max_tokens=120)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city"}


def test_a_forced_tool_call_streams_on_the_anthropic_route(claude, model_id):
    tools = [{"name": "get_weather", "description": "The weather in a city",
              "input_schema": WEATHER[0]["function"]["parameters"]}]
    messages = [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(RED).decode()}},
        {"type": "text", "text": "Weather where this is?"}]}]
    m = claude.messages.create(model=model_id, max_tokens=120, tools=tools, tool_choice={"type": "any"},
                               messages=messages)
    assert m.stop_reason == "tool_use"
    (use,) = [b for b in m.content if b.type == "tool_use"]
    assert use.name == "get_weather" and set(use.input) == {"city"}


# ---- the default text model ------------------------------------------------------

def test_the_default_text_model_refuses_images_with_a_400(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, max_tokens=4, messages=ask(image_part()))
    assert err.value.status_code == 400 and "has no vision" in err.value.message
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=model, max_output_tokens=4, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": data_url(RED)}]}])
    r = httpx.post(server.base_url + "/v1/messages", headers={"anthropic-version": "2023-06-01"}, json={
        "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(RED).decode()}}]}]})
    assert r.status_code == 400 and "has no vision" in r.json()["error"]["message"]
