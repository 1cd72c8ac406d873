"""Images in requests: read from each dialect's spelling, checked, decoded, and put in the prompt.

Every dialect's adapter makes one ImageInputs per request and hands it each
image part it meets (OpenAI chat's `image_url`, Responses' `input_image`,
Anthropic's `image` block). Each part becomes a `{"type": "image"}` entry in
the neutral message's content, which chat templates of vision models render
as the model's image placeholder; `prepare` then expands the placeholders and
`attach` gives the engine the pixel arrays.

What is refused, and how:
- any image, when the model has no vision (400, "reads text only");
- http(s) URLs unless --allow-remote-media; even then never to private,
  loopback, link-local or reserved addresses (400, see remote_media);
- other URL schemes, bad base64, non-images, formats other than PNG, JPEG,
  GIF and WebP (400);
- more images than --max-images (400), more bytes than --max-image-bytes or
  more pixels than --max-image-pixels (413).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import replace

from .errors import InvalidRequest, PayloadTooLarge
from .remote_media import RemoteFetcher

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
DATA_URL = re.compile(r"data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)", re.DOTALL | re.IGNORECASE)
IMAGE = {"type": "image"}


def no_vision(ctx, param: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: model {ctx.served.model_id!r} has no vision: it reads text only, so images "
                          "are refused. Serve a vision-language model to send images.",
                          param=param, code="model_has_no_vision")


def decode_image(data: bytes, *, max_pixels: int, param: str):
    """A Pillow RGB image from encoded bytes, checked before its pixels are decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidRequest(f"{param}: the data is not an image this server can read (PNG, JPEG, GIF or WebP)",
                             param=param, code="invalid_image") from None
    if image.format not in FORMATS:
        raise InvalidRequest(f"{param}: {image.format} images are not accepted; send PNG, JPEG, GIF or WebP",
                             param=param, code="invalid_image")
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{param}: the image is {width}x{height} = {width * height} pixels; this server's "
                              f"limit is {max_pixels} (--max-image-pixels)", param=param, code="image_too_large")
    if width < 1 or height < 1:
        raise InvalidRequest(f"{param}: the image is empty ({width}x{height})", param=param, code="invalid_image")
    try:
        image.seek(0)  # an animation's first frame
        image.load()
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise InvalidRequest(f"{param}: the image could not be decoded: {exc}", param=param,
                             code="invalid_image") from None


def join_content(parts: list, joiner: str = ""):
    """A message's content: a string when it is all text (as text models always saw it),
    else the list of text and image parts that vision templates read."""
    if all(isinstance(p, str) for p in parts):
        return joiner.join(parts)
    return [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]


class ImageInputs:
    """One request's images, in prompt order, checked against the server's limits as they come."""

    def __init__(self, ctx, *, fetcher: RemoteFetcher | None = None) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.images: list = []
        self.arrays = None
        self._fetcher = fetcher

    # ---- each dialect's spelling ---------------------------------------------
    def openai_content(self, content, *, role: str, param: str):
        """A chat message's content: a string, or text and image_url parts."""
        if content is None or isinstance(content, str):
            return content or ""
        parts: list = []
        for j, part in enumerate(content):
            kind, where = part.get("type"), f"{param}.{j}"
            if kind == "text":
                parts.append(str(part.get("text", "")))
            elif kind == "image_url":
                parts.append(self.openai_part(part, role=role, param=where))
            else:
                raise InvalidRequest(f"{where}: content part type {kind!r} is not supported; use text or image_url",
                                     param=where)
        return join_content(parts)

    def openai_part(self, part: dict, *, role: str = "user", param: str) -> dict:
        """Chat's {"type": "image_url", "image_url": {"url": ..., "detail": ...}} (a bare string is accepted too)."""
        self._admit(param, role)
        ref = part.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        if not isinstance(url, str) or not url:
            raise InvalidRequest(f"{param}: an image_url part needs image_url.url", param=f"{param}.image_url")
        return self._from_url(url, param=f"{param}.image_url")

    def responses_part(self, part, *, role: str = "user", param: str) -> dict:
        """Responses' {"type": "input_image", "image_url": ...}; uploaded files (file_id) do not exist here."""
        self._admit(param, role)
        url = getattr(part, "image_url", None)
        if not isinstance(url, str) or not url:
            why = "file_id uploads are not supported here; " if getattr(part, "file_id", None) else ""
            raise InvalidRequest(f"{param}: {why}an input_image needs image_url (a data: URL)",
                                 param=f"{param}.image_url")
        return self._from_url(url, param=f"{param}.image_url")

    def anthropic_block(self, block, *, role: str = "user", param: str) -> dict:
        """Anthropic's {"type": "image", "source": {"type": "base64"|"url", ...}}."""
        self._admit(param, role)
        source = getattr(block, "source", None)
        if not isinstance(source, dict):
            raise InvalidRequest(f"{param}: an image block needs a source", param=f"{param}.source")
        kind = source.get("type")
        if kind == "base64":
            media_type = source.get("media_type")
            if media_type not in FORMATS.values():
                raise InvalidRequest(f"{param}.source.media_type must be one of {', '.join(FORMATS.values())}",
                                     param=f"{param}.source.media_type")
            return self._add(self._base64(source.get("data"), param=f"{param}.source.data"), param=param)
        if kind == "url" and isinstance(source.get("url"), str):
            return self._from_url(source["url"], param=f"{param}.source.url")
        raise InvalidRequest(f"{param}: image sources must be base64 or url, not {kind!r}",
                             param=f"{param}.source.type")

    # ---- into the prompt --------------------------------------------------------
    def prepare(self, tokens: list[int], *, param: str = "messages") -> list[int]:
        """The prompt with each image's placeholder expanded to its image tokens."""
        if self.ctx.vision is None:
            return tokens
        from ..vision.prompt import ImagePromptError

        try:
            expanded, self.arrays = self.ctx.vision.prepare(tokens, self.images)
        except ImagePromptError as exc:
            raise InvalidRequest(f"{param}: {exc}", param=param) from None
        return expanded

    def attach(self, request):
        return replace(request, media=self.arrays) if self.arrays is not None else request

    # ---- checks and decoding -----------------------------------------------------
    def _admit(self, param: str, role: str) -> None:
        if self.ctx.vision is None:
            raise no_vision(self.ctx, param)
        if role != "user":
            # System turns get the tool prompt appended as text, and no chat API puts images elsewhere.
            raise InvalidRequest(f"{param}: images are accepted in user messages only, not in {role} content",
                                 param=param)
        if len(self.images) >= self.config.max_images_per_request:
            raise InvalidRequest(f"{param}: at most {self.config.max_images_per_request} images per request "
                                 "(--max-images)", param=param, code="too_many_images")

    def _from_url(self, url: str, *, param: str) -> dict:
        if url[:5].lower() == "data:":
            return self._add(self._data_url(url, param=param), param=param)
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in ("http", "https"):
            raise InvalidRequest(f"{param}: image URLs must be data: URLs (base64), or http(s) where the server "
                                 "allows remote media", param=param)
        if not self.config.allow_remote_media:
            raise InvalidRequest(f"{param}: remote image URLs are refused by this server; send the image inline "
                                 "as a data: URL (base64), or start the server with --allow-remote-media",
                                 param=param, code="remote_media_disabled")
        fetcher = self._fetcher or RemoteFetcher(timeout_s=self.config.remote_media_timeout_s,
                                                 max_bytes=self.config.max_image_bytes)
        return self._add(fetcher.fetch(url, param=param), param=param)

    def _data_url(self, url: str, *, param: str) -> bytes:
        match = DATA_URL.fullmatch(url)
        if match is None:
            raise InvalidRequest(f"{param}: malformed data: URL; expected data:image/png;base64,...", param=param)
        media_type = match["type"].strip().lower()
        if media_type and not media_type.startswith("image/"):
            raise InvalidRequest(f"{param}: the data: URL holds {media_type}, not an image", param=param,
                                 code="invalid_image")
        if "base64" not in (p.strip().lower() for p in match["params"].split(";")):
            raise InvalidRequest(f"{param}: image data: URLs must be base64 (data:image/png;base64,...)",
                                 param=param)
        return self._base64(match["data"], param=param)

    def _base64(self, data, *, param: str) -> bytes:
        if not isinstance(data, str) or not data:
            raise InvalidRequest(f"{param}: the image data is empty", param=param)
        limit = self.config.max_image_bytes
        if len(data) // 4 * 3 > limit + 3:  # refuse before decoding anything
            raise self._too_large(param, approx=len(data) // 4 * 3)
        try:
            raw = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"{param}: the image data is not valid base64", param=param,
                                 code="invalid_image") from None
        if len(raw) > limit:
            raise self._too_large(param, approx=len(raw))
        return raw

    def _too_large(self, param: str, *, approx: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"{param}: the image is about {approx} bytes; this server's limit is "
                               f"{self.config.max_image_bytes} (--max-image-bytes)", param=param,
                               code="image_too_large")

    def _add(self, raw: bytes, *, param: str) -> dict:
        self.images.append(decode_image(raw, max_pixels=self.config.max_image_pixels, param=param))
        return dict(IMAGE)
