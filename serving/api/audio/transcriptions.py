"""POST /v1/audio/transcriptions: OpenAI's multipart request, served by the Whisper worker."""

from __future__ import annotations

import json

from ...config import ServerConfig
from ...speech.decode import AudioError, decode_audio
from ...speech.jobs import TranscriptionJob
from ...speech.worker import ModelWorker
from ..errors import APIError, InvalidRequest, ModelNotFound, UnsupportedField
from . import formats
from .form import TranscriptionForm, read_upload
from .waiting import run_job


class UnsupportedAudioFormat(APIError):
    status = 415
    code = "unsupported_audio_format"


class AsrNotConfigured(ModelNotFound):
    pass


_AUDIO_ERRORS = {"format": UnsupportedAudioFormat, "corrupt": UnsupportedAudioFormat}


def _granularities(form: TranscriptionForm) -> tuple[str, ...]:
    if form.timestamp_granularities is None:
        return ("segment",)
    if form.response_format != "verbose_json":
        raise InvalidRequest("timestamp_granularities needs response_format verbose_json",
                             param="timestamp_granularities")
    return tuple(dict.fromkeys(form.timestamp_granularities)) or ("segment",)


def _refuse_unsupported(form: TranscriptionForm) -> None:
    if form.stream:
        raise UnsupportedField("stream: Whisper transcriptions are returned whole; streaming is not supported",
                               param="stream")
    for name in ("include", "chunking_strategy"):
        if getattr(form, name):
            raise UnsupportedField(f"{name} is not supported by this server's Whisper model", param=name)


class Transcriptions:
    """Served by `worker` (None: no --asr-model, and every request is told how to turn it on)."""

    def __init__(self, worker: ModelWorker | None, *, model_ids: tuple[str, ...], languages: tuple[str, ...],
                 config: ServerConfig) -> None:
        self.worker = worker
        self.model_ids = model_ids
        self.languages = languages
        self.config = config

    def on_post(self, req, resp):
        if self.worker is None:
            raise AsrNotConfigured("this server has no speech-to-text model; start it with "
                                   "--asr-model whisper-tiny.en to serve /v1/audio/transcriptions", param="model")
        upload = read_upload(req, max_file_bytes=self.config.max_audio_bytes)
        form = upload.form
        granularities = _granularities(form)
        job = self._job(form, upload.data, granularities)
        transcript = run_job(self.worker, job, timeout_s=self.config.request_timeout_s, what="speech-to-text")
        content_type, body = formats.render(transcript, form.response_format, granularities)
        resp.content_type = content_type
        resp.text = json.dumps(body, ensure_ascii=False) if isinstance(body, dict) else body

    def _job(self, form: TranscriptionForm, data: bytes, granularities: tuple[str, ...]) -> TranscriptionJob:
        if self.config.strict_model_id and form.model not in self.model_ids:
            raise ModelNotFound(f"model {form.model!r} is not served here; speech-to-text models: "
                                f"{', '.join(self.model_ids)}", param="model")
        _refuse_unsupported(form)
        language = (form.language or "").strip().lower() or None
        if language is not None and language not in self.languages:
            shown = ", ".join(self.languages[:12]) + (" ..." if len(self.languages) > 12 else "")
            raise InvalidRequest(f"language {form.language!r} is not one this model transcribes ({shown}); "
                                 "give an ISO-639-1 code", param="language")
        try:
            audio = decode_audio(data, max_seconds=self.config.max_audio_seconds)
        except AudioError as exc:
            raise _AUDIO_ERRORS.get(exc.reason, InvalidRequest)(str(exc), param="file") from None
        return TranscriptionJob(samples=audio.samples, language=language, prompt=form.prompt,
                                temperature=form.temperature, word_timestamps="word" in granularities)
