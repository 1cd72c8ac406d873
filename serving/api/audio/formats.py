"""A Transcript in each of OpenAI's transcription response formats."""

from __future__ import annotations

import math

from ...speech.jobs import Transcript

# ISO-639-1 -> the lowercase English name OpenAI's verbose_json reports ("english").
_LANGUAGE_NAMES = {"en": "english"}


def language_name(code: str) -> str:
    try:
        from mlx_audio.stt.models.whisper.tokenizer import LANGUAGES
    except ImportError:  # the names are cosmetic; never fail a transcription over them
        LANGUAGES = _LANGUAGE_NAMES
    return LANGUAGES.get(code, code)


def _clock(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def srt(transcript: Transcript) -> str:
    cues = [f"{n}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{s['text'].strip()}\n"
            for n, s in enumerate(transcript.segments, start=1)]
    return "\n".join(cues)


def vtt(transcript: Transcript) -> str:
    cues = [f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{s['text'].strip()}\n"
            for s in transcript.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def usage(transcript: Transcript) -> dict:
    # OpenAI bills whisper-1 by the second and reports it so.
    return {"type": "duration", "seconds": math.ceil(transcript.duration_s)}


def _segment(s: dict) -> dict:
    return {"id": int(s["id"]), "seek": int(s.get("seek", 0)), "start": float(s["start"]), "end": float(s["end"]),
            "text": s["text"], "tokens": [int(t) for t in s.get("tokens", [])],
            "temperature": float(s.get("temperature", 0.0)), "avg_logprob": float(s.get("avg_logprob", 0.0)),
            "compression_ratio": float(s.get("compression_ratio", 0.0)),
            "no_speech_prob": float(s.get("no_speech_prob", 0.0))}


def verbose_json(transcript: Transcript, granularities: tuple[str, ...]) -> dict:
    body = {"task": "transcribe", "language": language_name(transcript.language),
            "duration": round(transcript.duration_s, 3), "text": transcript.text}
    if "word" in granularities:
        body["words"] = [w for s in transcript.segments for w in s.get("words", [])]
    if "segment" in granularities:
        body["segments"] = [_segment(s) for s in transcript.segments]
    body["usage"] = usage(transcript)
    return body


def render(transcript: Transcript, response_format: str, granularities: tuple[str, ...]) -> tuple[str, object]:
    """(content type, body): a dict for the JSON formats, text for the others."""
    if response_format == "json":
        return "application/json", {"text": transcript.text, "usage": usage(transcript)}
    if response_format == "verbose_json":
        return "application/json", verbose_json(transcript, granularities)
    if response_format == "text":
        return "text/plain; charset=utf-8", transcript.text + "\n"
    if response_format == "srt":
        return "text/plain; charset=utf-8", srt(transcript)
    if response_format == "vtt":
        return "text/vtt; charset=utf-8", vtt(transcript)
    raise ValueError(f"unknown response format {response_format!r}")
