"""mlx-audio's Whisper behind the Transcriber's Backend contract.

Loaded by hand rather than through `mlx_audio.stt.load`, which always builds the model in
float16: on a CPU, float32 is the fast path (float16 never reaches the BLAS), and Whisper's
decoder checks that its audio features are float32 unless told fp16, so the dtype is chosen
here and passed to decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

from .decode import SAMPLE_RATE
from .jobs import Transcript, TranscriptionJob

# OpenAI's rule for temperature 0: decode greedily, and when the result looks like a failure
# (too repetitive, or too unlikely) retry at each higher temperature in turn.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_PUNCTUATION = "\"'“”‘’¿¡([{-.,!?:;)]}。，！？：、…"
_SEGMENT_KEYS = ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                 "compression_ratio", "no_speech_prob")


def is_whisper_folder(folder: Path) -> bool:
    """mlx-audio's Whisper config names its dimensions n_mels, n_audio_ctx, ...; HF's says model_type."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return "n_audio_ctx" in config or config.get("model_type") == "whisper"


def _words(words: list[dict]) -> list[dict]:
    """OpenAI's words carry no punctuation; Whisper's timing step glues it to its neighbours."""
    out = []
    for w in words:
        text = w["word"].strip().strip(_PUNCTUATION)
        if text:
            out.append({"word": text, "start": float(w["start"]), "end": float(w["end"])})
    return out


class WhisperBackend:
    def __init__(self, folder: Path, *, dtype: str = "float32") -> None:
        self.folder = Path(folder)
        self.dtype = dtype
        self.model = None
        self.languages: tuple[str, ...] = ()

    def load(self) -> None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the processor files are local; never reach a hub
        import mlx.core as mx
        from mlx_audio.stt.models.whisper.tokenizer import LANGUAGES
        from mlx_audio.stt.models.whisper.whisper import Model, ModelDimensions

        config = json.loads((self.folder / "config.json").read_text())
        # float32 where asked (CPU); float16 otherwise, the only other dtype Whisper's decoder takes.
        dtype = mx.float32 if self.dtype == "float32" else mx.float16
        model = Model(ModelDimensions.from_dict(config), dtype=dtype)
        weights = {}
        for path in sorted(self.folder.glob("*.safetensors")):
            weights.update(mx.load(str(path)))
        model.load_weights(list(model.sanitize(weights).items()), strict=True)
        mx.eval(model.parameters())
        model.eval()
        self.model = Model.post_load_hook(model, self.folder)
        if getattr(self.model, "_processor", None) is None:
            raise ValueError(f"{self.folder} has no tokenizer files transformers' WhisperProcessor can read")
        self.languages = tuple(LANGUAGES)[: model.num_languages] if model.is_multilingual else ("en",)

    def run(self, job: TranscriptionJob) -> Transcript:
        import mlx.core as mx

        model = self.model
        temperature = FALLBACK_TEMPERATURES if job.temperature == 0 else job.temperature
        result = model.generate(
            job.samples, language=job.language or (None if model.is_multilingual else "en"),
            temperature=temperature, initial_prompt=job.prompt or None,
            word_timestamps=job.word_timestamps, fp16=model.dtype == mx.float16, verbose=None,
        )
        segments = []
        for segment in result.segments or []:
            if not segment.get("text", "").strip():
                continue  # generate() blanks instantaneous or empty segments instead of dropping them
            kept = {k: segment[k] for k in _SEGMENT_KEYS if k in segment}
            kept["id"] = len(segments)
            if job.word_timestamps:
                kept["words"] = _words(segment.get("words", []))
            segments.append(kept)
        return Transcript(text=result.text.strip(), language=result.language or "en",
                          duration_s=len(job.samples) / SAMPLE_RATE, segments=segments)
