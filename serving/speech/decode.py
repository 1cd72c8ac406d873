"""Uploaded audio bytes -> 16 kHz mono float32 samples, for Whisper.

libsndfile (through soundfile, whose wheel bundles it) reads the container from its bytes,
so no ffmpeg is needed. Only WAV, FLAC and Ogg (Vorbis or Opus) are accepted: libsndfile
1.2 can also read MP3 and a dozen rare formats, but the accepted set is kept to what is
documented and tested. The file name a client sends is never trusted; the bytes decide.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
# libsndfile's names for the containers we accept, and what a client calls them.
ACCEPTED = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "W64": "wav", "FLAC": "flac", "OGG": "ogg"}
ACCEPTED_NAMES = "wav, flac, ogg (vorbis or opus)"
_MAX_CHANNELS = 8
_MAX_RATE = 384_000


class AudioError(ValueError):
    """Audio that cannot be transcribed; `reason` picks the HTTP status at the API edge."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # "format" | "too_long" | "empty" | "corrupt"


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    duration_s: float
    container: str  # "wav" | "flac" | "ogg"


def _sniff(data: bytes) -> str:
    """A name for the common formats we refuse, so the error can say what it got."""
    heads = ((b"ID3", "mp3"), (b"\xff\xfb", "mp3"), (b"\xff\xf3", "mp3"), (b"\xff\xf2", "mp3"),
             (b"\x1aE\xdf\xa3", "webm/matroska"), (b"fLaC", "flac"), (b"OggS", "ogg"), (b"RIFF", "wav"))
    for magic, name in heads:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        return "mp4/m4a"
    return "unrecognised data"


def _info(data: bytes):
    import soundfile as sf

    try:
        return sf.info(io.BytesIO(data))
    except (RuntimeError, TypeError, ValueError):  # soundfile's LibsndfileError is a RuntimeError
        raise AudioError(f"could not read the upload as audio ({_sniff(data)}); accepted formats: "
                         f"{ACCEPTED_NAMES}", reason="format") from None


def mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Average the channels, then resample by a rational factor with a polyphase filter."""
    from scipy.signal import resample_poly

    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // g, rate // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def decode_audio(data: bytes, *, max_seconds: float) -> DecodedAudio:
    """Decode one upload, refusing what is not WAV/FLAC/Ogg, is empty or is too long.

    The duration comes from the header and is checked before any sample is decoded, so a
    small, highly compressed file cannot expand into hours of samples.
    """
    import soundfile as sf

    if not data:
        raise AudioError("the uploaded file is empty", reason="empty")
    info = _info(data)
    container = ACCEPTED.get(info.format)
    if container is None:
        raise AudioError(f"{info.format.lower()} audio ({info.format_info}) is not accepted; send {ACCEPTED_NAMES}",
                         reason="format")
    if not (0 < info.samplerate <= _MAX_RATE and 0 < info.channels <= _MAX_CHANNELS):
        raise AudioError(f"{info.channels} channels at {info.samplerate} Hz is outside what is accepted "
                         f"(1..{_MAX_CHANNELS} channels, up to {_MAX_RATE} Hz)", reason="format")
    if info.frames <= 0:
        raise AudioError("the audio holds no samples", reason="empty")
    duration = info.frames / info.samplerate
    if duration > max_seconds:
        raise AudioError(f"the audio lasts {duration:.1f} s; this server transcribes at most {max_seconds:g} s "
                         "per request (--max-audio-seconds)", reason="too_long")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError) as exc:
        raise AudioError(f"the {container} audio is damaged and could not be decoded: {exc}",
                         reason="corrupt") from None
    if samples.shape[0] == 0:
        raise AudioError("the audio holds no samples", reason="empty")
    return DecodedAudio(mono_16k(samples, rate), samples.shape[0] / rate, container)
