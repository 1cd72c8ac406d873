"""Images in the three dialects against a fake engine: extraction, limits, URL policy, prompt expansion."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from falcon import testing
from PIL import Image

from serving.api.dialect import ServeContext
from serving.api.errors import InvalidRequest, PayloadTooLarge
from serving.api.images import ImageInputs, decode_image, join_content
from serving.app import create_app
from serving.config import ServerConfig
from serving.vision.prompt import VisionPrompter

from .fakes import FakeEngine, FakeTokenizer, served

IMAGE_TOKEN = 1  # the fake template writes chr(1) for an image; the fake tokenizer encodes it as 1


def png(width=16, height=24, color=(200, 30, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes | None = None, media_type="image/png") -> str:
    return f"data:{media_type};base64,{b64(data if data is not None else png())}"


class VisionTokenizer(FakeTokenizer):
    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False, **kwargs):
        def render(content):
            if isinstance(content, str):
                return content
            return "".join("\x01" if p["type"] == "image" else p["text"] for p in content)

        return "".join(f"<{m['role']}>{render(m['content'])}" for m in messages) + "<assistant>"


class FakeImageProcessor:
    """One token per 8x8 block, like a dynamic-resolution processor."""

    def num_image_tokens(self, height, width):
        return (height // 8) * (width // 8)

    def __call__(self, images):
        return {"pixel_values": np.zeros((sum(self.num_image_tokens(i.height, i.width) for i in images), 4)),
                "image_grid_thw": np.array([[1, i.height // 8, i.width // 8] for i in images])}


class VisionFakeEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = VisionTokenizer()
        self.vision = VisionPrompter(FakeImageProcessor(), image_token_id=IMAGE_TOKEN, image_token="\x01")


def client(engine=None, **cfg):
    return testing.TestClient(create_app(ServerConfig(**cfg), engine or VisionFakeEngine(),
                                         served(context_length=4096), {}))


def chat_body(*parts, role="user"):
    return {"messages": [{"role": role, "content": list(parts)}], "max_tokens": 3}


def image_part(url=None):
    return {"type": "image_url", "image_url": {"url": url or data_url()}}


def text_part(text="What is this?"):
    return {"type": "text", "text": text}


def anthropic_image(data=None, media_type="image/png"):
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": b64(data or png())}}


def last(engine):
    return engine.requests[-1]


# ---- the prompt each dialect builds ----------------------------------------------

def test_chat_image_becomes_expanded_image_tokens_and_pixel_arrays():
    engine = VisionFakeEngine()
    r = client(engine).simulate_post("/v1/chat/completions", json=chat_body(text_part("hi "), image_part()))
    assert r.status_code == 200, r.text
    req = last(engine)
    assert req.prompt_tokens.count(IMAGE_TOKEN) == 3 * 2  # a 16x24 image: 2x3 blocks of 8
    text = "".join(chr(t) for t in req.prompt_tokens)
    assert text == "<user>hi " + "\x01" * 6 + "<assistant>"
    assert req.media.count == 1 and req.media.pixel_values.shape == (6, 4)
    assert req.media.extra["image_grid_thw"].tolist() == [[1, 3, 2]]
    assert r.json["usage"]["prompt_tokens"] == len(req.prompt_tokens)


def test_responses_input_image_reaches_the_prompt():
    engine = VisionFakeEngine()
    body = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "describe"},
                                                    {"type": "input_image", "image_url": data_url()}]}],
            "max_output_tokens": 3}
    r = client(engine).simulate_post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    assert last(engine).prompt_tokens.count(IMAGE_TOKEN) == 6 and last(engine).media.count == 1


def test_anthropic_image_block_reaches_the_prompt_and_count_tokens_counts_it():
    engine = VisionFakeEngine()
    messages = [{"role": "user", "content": [anthropic_image(), {"type": "text", "text": "what?"}]}]
    c = client(engine)
    r = c.simulate_post("/v1/messages", json={"model": "m", "max_tokens": 3, "messages": messages})
    assert r.status_code == 200, r.text
    req = last(engine)
    assert req.prompt_tokens.count(IMAGE_TOKEN) == 6 and req.media.count == 1
    counted = c.simulate_post("/v1/messages/count_tokens", json={"model": "m", "messages": messages})
    assert counted.json["input_tokens"] == len(req.prompt_tokens) == r.json["usage"]["input_tokens"]


def test_a_stored_responses_turn_keeps_its_image_for_the_next_turn():
    engine = VisionFakeEngine()
    c = client(engine)
    first = c.simulate_post("/v1/responses", json={"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": data_url()}]}], "max_output_tokens": 3})
    assert first.status_code == 200, first.text
    second = c.simulate_post("/v1/responses", json={"input": "and now?", "previous_response_id": first.json["id"],
                                                     "max_output_tokens": 3})
    assert second.status_code == 200, second.text
    assert last(engine).prompt_tokens.count(IMAGE_TOKEN) == 6 and last(engine).media.count == 1


def test_text_only_requests_on_a_vision_model_carry_no_media():
    engine = VisionFakeEngine()
    r = client(engine).simulate_post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and last(engine).media is None


def test_several_images_keep_their_order_and_sizes():
    engine = VisionFakeEngine()
    body = chat_body(image_part(data_url(png(8, 8))), text_part("and"), image_part(data_url(png(16, 16))))
    assert client(engine).simulate_post("/v1/chat/completions", json=body).status_code == 200
    text = "".join(chr(t) for t in last(engine).prompt_tokens)
    assert text == "<user>\x01and\x01\x01\x01\x01<assistant>"
    assert last(engine).media.count == 2


def test_tools_and_images_share_the_prompt():
    engine = VisionFakeEngine()
    tools = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object", "properties": {}}}}]
    body = {**chat_body(text_part("look"), image_part()), "tools": tools}
    r = client(engine, tool_prompt="generic").simulate_post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    text = "".join(chr(t) for t in last(engine).prompt_tokens)
    assert "look" in text and "You can call these functions" in text and text.count("\x01") == 6


# ---- refusals ---------------------------------------------------------------------

TEXT_MODEL_BODIES = [
    ("/v1/chat/completions", chat_body(image_part()), "messages.0.content.0"),
    ("/v1/responses", {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": data_url()}]}]},
     "input.0.content.0"),
    ("/v1/messages", {"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": [anthropic_image()]}]},
     "messages.0.content.0"),
]


@pytest.mark.parametrize("route, body, param", TEXT_MODEL_BODIES)
def test_a_text_model_refuses_images_in_every_dialect(route, body, param):
    engine = FakeEngine()
    r = client(engine).simulate_post(route, json=body)
    assert r.status_code == 400, r.text
    message = r.json["error"]["message"]
    assert "has no vision" in message and "text only" in message and param in message
    assert engine.requests == []


def test_remote_urls_are_refused_unless_allowed():
    r = client().simulate_post("/v1/chat/completions", json=chat_body(image_part("https://example.com/cat.png")))
    assert r.status_code == 400
    assert r.json["error"]["code"] == "remote_media_disabled" and "--allow-remote-media" in r.json["error"]["message"]


def test_allowed_remote_urls_still_never_reach_loopback():
    body = chat_body(image_part("http://127.0.0.1:9/secret.png"))
    r = client(allow_remote_media=True).simulate_post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json["error"]["code"] == "remote_media_refused"


def test_anthropic_url_source_follows_the_same_policy():
    block = {"type": "image", "source": {"type": "url", "url": "http://example.com/a.png"}}
    r = client().simulate_post("/v1/messages", json={"model": "m", "max_tokens": 3,
                                                      "messages": [{"role": "user", "content": [block]}]})
    assert r.status_code == 400 and r.json["type"] == "error" and "--allow-remote-media" in r.json["error"]["message"]


@pytest.mark.parametrize("cfg, body, status, code", [
    ({"max_image_bytes": 100}, chat_body(image_part(data_url(png(64, 64, fmt="BMP"), "image/bmp"))), 413,
     "image_too_large"),
    ({"max_image_pixels": 100}, chat_body(image_part()), 413, "image_too_large"),
    ({"max_images_per_request": 1}, chat_body(image_part(), image_part()), 400, "too_many_images"),
    ({}, chat_body(image_part("data:image/png;base64," + b64(b"not an image at all"))), 400, "invalid_image"),
    ({}, chat_body(image_part(data_url(png(fmt="BMP"), "image/bmp"))), 400, "invalid_image"),
    ({}, chat_body(image_part("data:image/png;base64,!!!notbase64")), 400, "invalid_image"),
    ({}, chat_body(image_part("data:text/plain;base64," + b64(b"hello"))), 400, "invalid_image"),
])
def test_limits_and_bad_images(cfg, body, status, code):
    engine = VisionFakeEngine()
    r = client(engine, **cfg).simulate_post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    assert r.json["error"]["code"] == code and r.json["error"]["param"].startswith("messages.0.content.")
    assert engine.requests == []


def test_too_large_image_is_anthropic_shaped_413():
    body = {"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": [anthropic_image()]}]}
    r = client(max_image_pixels=10).simulate_post("/v1/messages", json=body)
    assert r.status_code == 413 and r.json["error"]["type"] == "request_too_large"


@pytest.mark.parametrize("body, needle", [
    (chat_body(image_part(), role="system"), "user messages only"),
    (chat_body({"type": "image_url"}), "image_url.url"),
    (chat_body({"type": "input_audio"}), "not supported"),
    (chat_body(image_part("file:///etc/passwd")), "data: URLs"),
    (chat_body(image_part("data:image/png,rawbytes")), "base64"),
    (chat_body(text_part("\x01 spelled"), image_part()), "placeholder"),
])
def test_malformed_image_parts_are_400(body, needle):
    r = client().simulate_post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json["error"]["message"]


def test_anthropic_media_type_must_be_an_accepted_image_type():
    body = {"model": "m", "max_tokens": 3,
            "messages": [{"role": "user", "content": [anthropic_image(media_type="application/pdf")]}]}
    r = client().simulate_post("/v1/messages", json=body)
    assert r.status_code == 400 and "media_type" in r.json["error"]["message"]


def test_responses_file_ids_are_refused_by_name():
    body = {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}
    r = client().simulate_post("/v1/responses", json=body)
    assert r.status_code == 400 and "file_id" in r.json["error"]["message"]


# ---- the pieces --------------------------------------------------------------------

def _inputs(**cfg) -> ImageInputs:
    engine = VisionFakeEngine()
    ctx = ServeContext(engine.tokenizer, served(), ServerConfig(**cfg), vision=engine.vision)
    return ImageInputs(ctx)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_accepted_formats_decode_to_rgb(fmt):
    image = decode_image(png(10, 12, fmt=fmt), max_pixels=1000, param="p")
    assert image.mode == "RGB" and image.size == (10, 12)


def test_pixels_are_checked_from_the_header_before_decoding():
    big = png(3000, 3000)  # compresses to a few kB
    with pytest.raises(PayloadTooLarge, match="9000000 pixels"):
        decode_image(big, max_pixels=1_000_000, param="p")


def test_a_truncated_image_is_400():
    data = png(64, 64, color=(1, 2, 3), fmt="JPEG")
    with pytest.raises(InvalidRequest):
        decode_image(data[: len(data) // 2], max_pixels=10_000, param="p")


def test_base64_with_line_breaks_and_untyped_data_urls_are_accepted():
    media = _inputs()
    wrapped = "\n".join(b64(png())[i:i + 60] for i in range(0, len(b64(png())), 60))
    assert media.openai_part({"image_url": {"url": "data:;base64," + wrapped}}, param="p") == {"type": "image"}
    assert media.openai_part({"image_url": "DATA:image/png;BASE64," + b64(png())}, param="p") == {"type": "image"}
    assert len(media.images) == 2


def test_oversized_base64_is_refused_before_decoding():
    media = _inputs(max_image_bytes=10)
    with pytest.raises(PayloadTooLarge):
        media.openai_part({"image_url": {"url": "data:image/png;base64," + "A" * 4000}}, param="p")


def test_remote_fetch_uses_the_fetcher_and_checks_what_comes_back():
    class Fetcher:
        def fetch(self, url, *, param):
            self.url = url
            return png()

    engine = VisionFakeEngine()
    fetcher = Fetcher()
    ctx = ServeContext(engine.tokenizer, served(), ServerConfig(allow_remote_media=True), vision=engine.vision)
    media = ImageInputs(ctx, fetcher=fetcher)
    assert media.openai_part({"image_url": {"url": "https://img.example/a.png"}}, param="p") == {"type": "image"}
    assert fetcher.url == "https://img.example/a.png" and media.images[0].size == (16, 24)


def test_join_content_keeps_text_only_content_a_string():
    assert join_content(["a", "b"], "\n") == "a\nb"
    assert join_content(["a", {"type": "image"}]) == [{"type": "text", "text": "a"}, {"type": "image"}]
