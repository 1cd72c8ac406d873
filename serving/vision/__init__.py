"""Vision-language models: detection from metadata, image prompts, the mlx-vlm engine, a tiny test model."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("mlx_proof.vision")


def vision_engine_for(folder: Path, settings):
    """A VisionEngine when the folder's metadata says it is a vision model, else None (the text engine serves it)."""
    from .detect import modality

    kind = modality(folder)
    if not kind.vision:
        return None
    from .engine import VisionEngine, load_vision_model

    log.info("vision model (%s): served through mlx-vlm, one request at a time", kind.reason)
    return VisionEngine(lambda: load_vision_model(Path(folder)), settings)
