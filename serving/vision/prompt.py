"""A vision model's prompt: image placeholders expanded to their image tokens, plus pixel arrays.

The chat template renders one image placeholder token per image (Qwen2-VL:
`<|vision_start|><|image_pad|><|vision_end|>`). The model wants that token
repeated once per image feature, which depends on the image's size. Expanding
here, on the HTTP thread, gives the prompt's true length before the request is
queued, so the context check, max_tokens and usage all count image tokens.
Only numpy and Pillow run here; the engine thread turns the arrays into MLX's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ImagePromptError(ValueError):
    """The prompt and its images do not fit together (a client's mistake, so a 400)."""


@dataclass(frozen=True)
class ImageArrays:
    """One request's images as the model's image processor prepared them."""

    pixel_values: Any  # numpy array
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. image_grid_thw, passed to the model as keywords
    count: int = 0


class VisionPrompter:
    def __init__(self, image_processor, *, image_token_id: int, image_token: str | None = None) -> None:
        self.image_processor = image_processor
        self.image_token_id = image_token_id
        self.image_token = image_token
        counter = getattr(image_processor, "num_image_tokens", None)
        # Fixed-resolution processors give no per-size count; this server cannot size their prompts yet.
        self.unsupported = None if callable(counter) else (
            f"this model's image processor ({type(image_processor).__name__}) cannot say how many tokens "
            "an image takes, so this server cannot build image prompts for it")

    def tokens_per_image(self, image) -> int:
        width, height = image.size
        return int(self.image_processor.num_image_tokens(height, width))

    def prepare(self, tokens: list[int], images: list) -> tuple[list[int], ImageArrays | None]:
        """The prompt with each placeholder expanded for its image, and the images' pixel arrays."""
        slots = sum(1 for t in tokens if t == self.image_token_id)
        if slots != len(images):
            shown = f" ({self.image_token})" if self.image_token else ""
            raise ImagePromptError(
                f"the prompt has {slots} image placeholder token(s){shown} for {len(images)} image(s); "
                "text must not spell the model's image token")
        if not images:
            return list(tokens), None
        if self.unsupported:
            raise ImagePromptError(self.unsupported)
        counts = iter([self.tokens_per_image(img) for img in images])
        expanded: list[int] = []
        for t in tokens:
            expanded.extend([t] * next(counts) if t == self.image_token_id else (t,))
        processed = dict(self.image_processor(images=list(images)))
        pixel_values = processed.pop("pixel_values")
        return expanded, ImageArrays(pixel_values, processed, len(images))


def image_token_of(model_config: dict, processor) -> tuple[int, str | None]:
    """The id (and text) of the placeholder the template writes for an image."""
    for key in ("image_token_id", "image_token_index"):
        value = model_config.get(key)
        if isinstance(value, int):
            break
    else:
        value = getattr(processor, "image_token_id", None)
    token = getattr(processor, "image_token", None)
    if not isinstance(value, int):
        tokenizer = getattr(processor, "tokenizer", processor)
        value = tokenizer.convert_tokens_to_ids(token) if token else None
    if not isinstance(value, int):
        raise ValueError("the model names no image token (image_token_id in config.json)")
    return value, token if isinstance(token, str) else None
