"""OpenAI's audio routes: /v1/audio/transcriptions (Whisper) and /v1/audio/speech (optional TTS)."""

from .speech import Speech
from .transcriptions import Transcriptions

__all__ = ["Speech", "Transcriptions"]
