"""What the speech workers are asked to do, and what they answer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TranscriptionJob:
    samples: np.ndarray  # float32 mono at 16 kHz
    language: str | None = None  # ISO-639-1; None: the model's default or detection
    prompt: str | None = None
    temperature: float = 0.0  # 0: start greedy and raise it when decoding fails (OpenAI's rule)
    word_timestamps: bool = False


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # ISO-639-1
    duration_s: float
    segments: list[dict] = field(default_factory=list)  # start, end, text, tokens, ... and words


@dataclass(frozen=True)
class SpeechJob:
    text: str
    voice: str | None = None
    speed: float = 1.0


@dataclass(frozen=True)
class SpeechAudio:
    samples: np.ndarray  # float32 mono
    sample_rate: int
