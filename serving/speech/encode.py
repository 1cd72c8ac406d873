"""Synthesised samples -> the bytes of one of OpenAI's speech response formats.

libsndfile (soundfile's bundled build) writes WAV, FLAC, MP3 and Ogg Opus; AAC it cannot.
"""

from __future__ import annotations

import io
import math

import numpy as np

# response_format -> (libsndfile format, subtype, content type)
FORMATS = {
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    "opus": ("OGG", "OPUS", "audio/ogg"),
}
PCM_RATE = 24_000  # OpenAI's pcm is raw 16-bit little-endian at 24 kHz
_OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)
SUPPORTED = (*FORMATS, "pcm")


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def encode_audio(samples: np.ndarray, rate: int, response_format: str) -> tuple[bytes, str]:
    """Return (body, content type); `response_format` must be one of SUPPORTED."""
    import soundfile as sf

    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if response_format == "pcm":
        pcm = (_resample(samples, rate, PCM_RATE) * 32767).astype("<i2")
        return pcm.tobytes(), "audio/pcm"
    container, subtype, content_type = FORMATS[response_format]
    if response_format == "opus" and rate not in _OPUS_RATES:
        samples, rate = _resample(samples, rate, 48_000), 48_000
    out = io.BytesIO()
    sf.write(out, samples, rate, format=container, subtype=subtype)
    return out.getvalue(), content_type
