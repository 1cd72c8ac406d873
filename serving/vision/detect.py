"""Is a model folder a vision-language model? Decided from its metadata, never its name.

A vision model says so in its files: config.json carries a `vision_config`
(mlx-vlm builds its vision tower from it), or the folder holds an image
processor's configuration. A folder named "...-VL" with neither is a text
model; a folder with either is one whatever it is called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Keys only an image processor's configuration has (a speech model's feature extractor has none of them).
IMAGE_PROCESSOR_KEYS = ("image_processor_type", "image_mean", "image_std", "patch_size", "crop_size")


@dataclass(frozen=True)
class Modality:
    vision: bool
    reason: str  # which file said so, for the log and /health


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _has_image_processor(config: dict) -> bool:
    nested = config.get("image_processor")
    return any(k in config for k in IMAGE_PROCESSOR_KEYS) or (isinstance(nested, dict) and bool(nested))


def modality(folder: Path | str) -> Modality:
    folder = Path(folder)
    config = _json(folder / "config.json")
    vision_config = config.get("vision_config")
    if isinstance(vision_config, dict) and vision_config:
        return Modality(True, "config.json has a vision_config")
    for name in ("preprocessor_config.json", "processor_config.json"):
        if _has_image_processor(_json(folder / name)):
            return Modality(True, f"{name} configures an image processor")
    return Modality(False, "no vision_config and no image processor configuration")
