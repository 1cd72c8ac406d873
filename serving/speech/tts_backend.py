"""An optional local mlx-audio text-to-speech model (--tts-model FOLDER).

No MLX TTS model ships in a PyPI wheel, and mlx-audio's TTS models fetch parts (codecs,
voices) from a model hub when they load, which this project never reaches. So TTS is off
unless a user points at a complete local folder; this is best effort, checked only with
fakes here, and a model that still wants the hub fails at startup with its own error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .jobs import SpeechAudio, SpeechJob


def check_tts_folder(folder: str | Path) -> Path:
    """Refuse at startup what cannot be an mlx-audio TTS model folder."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ValueError(f"--tts-model {folder}: no such folder (a local mlx-audio TTS model folder is needed)")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--tts-model {folder}: no readable config.json ({exc})") from None
    if not isinstance(config, dict) or not any(path.glob("*.safetensors")):
        raise ValueError(f"--tts-model {folder}: needs a config.json object and *.safetensors weights")
    return path


class TTSBackend:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.model = None
        self.model_id = self.folder.resolve().name

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from mlx_audio.tts.utils import load_model

        self.model = load_model(self.folder)

    def run(self, job: SpeechJob) -> SpeechAudio:
        kwargs = {"text": job.text, "speed": job.speed}
        if job.voice:
            kwargs["voice"] = job.voice
        chunks, rate = [], getattr(self.model, "sample_rate", 24_000)
        for result in self.model.generate(**kwargs):
            chunks.append(np.asarray(result.audio, dtype=np.float32).reshape(-1))
            rate = getattr(result, "sample_rate", rate) or rate
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return SpeechAudio(samples=samples, sample_rate=int(rate))
