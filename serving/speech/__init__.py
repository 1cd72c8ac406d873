"""Speech beside the chat model: audio decoding, the Whisper worker, and optional local TTS."""
