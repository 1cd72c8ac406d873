"""Start the speech models a server was asked for (--asr-model, --tts-model), beside the chat model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ServerConfig
from .worker import ModelWorker

LOAD_TIMEOUT_S = 600


@dataclass(frozen=True)
class SpeechModels:
    asr: ModelWorker | None = None
    asr_id: str | None = None
    asr_languages: tuple[str, ...] = ()
    tts: ModelWorker | None = None
    tts_id: str | None = None

    @property
    def model_ids(self) -> tuple[str, ...]:
        """For /v1/models, after the chat model's ids."""
        return tuple(i for i in (self.asr_id, self.tts_id) if i)

    def stop(self) -> None:
        for worker in (self.asr, self.tts):
            if worker is not None:
                worker.stop()


NO_SPEECH = SpeechModels()


def _asr_folder(config: ServerConfig, *, dtype: str, cache_dir: Path, progress):
    from ..catalog import resolve_model
    from .whisper_backend import is_whisper_folder

    resolved = resolve_model(config.asr_model, cache_dir=cache_dir, dtype=dtype, progress=progress)
    if resolved.spec is not None and resolved.spec.kind != "asr":
        raise ValueError(f"--asr-model {config.asr_model} is a {resolved.spec.kind} model; speech-to-text "
                         "needs a Whisper model such as whisper-tiny.en")
    if resolved.spec is None and not is_whisper_folder(resolved.path):
        raise ValueError(f"--asr-model {config.asr_model}: the folder's config.json is not an mlx-audio Whisper "
                         "config (no n_audio_ctx, no model_type whisper)")
    return resolved


def start_speech(config: ServerConfig, *, dtype: str, cache_dir: Path, progress) -> SpeechModels:
    """Resolve, load and start each configured speech model; raises ValueError on a bad one."""
    from .worker import WorkerDown

    asr = asr_id = tts = tts_id = None
    languages: tuple[str, ...] = ()
    try:
        if config.asr_model:
            from .whisper_backend import WhisperBackend

            resolved = _asr_folder(config, dtype=dtype, cache_dir=cache_dir, progress=progress)
            backend = WhisperBackend(resolved.path, dtype=dtype)
            asr = ModelWorker(backend, name="speech-to-text", max_queue=config.max_queue)
            asr.start(timeout_s=LOAD_TIMEOUT_S)
            asr_id, languages = resolved.model_id, backend.languages
        if config.tts_model:
            from .tts_backend import TTSBackend, check_tts_folder

            backend = TTSBackend(check_tts_folder(config.tts_model))
            tts = ModelWorker(backend, name="text-to-speech", max_queue=config.max_queue)
            tts.start(timeout_s=LOAD_TIMEOUT_S)
            tts_id = backend.model_id
    except WorkerDown as exc:
        SpeechModels(asr=asr, tts=tts).stop()
        raise ValueError(str(exc)) from exc
    return SpeechModels(asr=asr, asr_id=asr_id, asr_languages=languages, tts=tts, tts_id=tts_id)
