"""POST /v1/audio/speech: 501 unless a local mlx-audio TTS folder is configured (--tts-model)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ...config import ServerConfig
from ...speech.encode import SUPPORTED, encode_audio
from ...speech.jobs import SpeechJob
from ...speech.worker import ModelWorker
from ..errors import APIError, InvalidRequest, UnsupportedField
from ..request_body import read_json, validate
from .waiting import run_job


class SpeechNotAvailable(APIError):
    status = 501
    type = "not_implemented_error"
    code = "tts_not_configured"


NO_TTS = ("text-to-speech is not available: no MLX text-to-speech model ships offline, so this server "
          "has none. Start it with --tts-model FOLDER (a local mlx-audio TTS model folder) to serve "
          "/v1/audio/speech")


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=4096)
    voice: str | dict | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None
    stream_format: Literal["audio", "sse"] = "audio"


class Speech:
    def __init__(self, worker: ModelWorker | None, *, config: ServerConfig) -> None:
        self.worker = worker
        self.config = config

    def on_post(self, req, resp):
        if self.worker is None:
            raise SpeechNotAvailable(NO_TTS)
        body = validate(read_json(req, max_bytes=self.config.max_body_bytes), SpeechRequest)
        if body.response_format not in SUPPORTED:
            raise InvalidRequest(f"response_format {body.response_format} cannot be written here; "
                                 f"use one of {', '.join(SUPPORTED)}", param="response_format")
        if body.instructions:
            raise UnsupportedField("instructions are not supported by local TTS models", param="instructions")
        if body.stream_format != "audio":
            raise UnsupportedField("stream_format sse is not supported; the audio is returned whole",
                                   param="stream_format")
        voice = body.voice if isinstance(body.voice, str) else None
        audio = run_job(self.worker, SpeechJob(text=body.input, voice=voice, speed=body.speed),
                        timeout_s=self.config.request_timeout_s, what="text-to-speech")
        resp.data, resp.content_type = encode_audio(audio.samples, audio.sample_rate, body.response_format)
