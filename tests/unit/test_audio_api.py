"""/v1/audio/transcriptions and /v1/audio/speech through the real app, with fake speech models."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid

import numpy as np
import pytest
import soundfile as sf
from falcon import testing

from serving.app import create_app
from serving.config import ServerConfig
from serving.speech.jobs import SpeechAudio, Transcript
from serving.speech.startup import SpeechModels
from serving.speech.worker import ModelWorker

from .fakes import FakeEngine, served

ROUTE = "/v1/audio/transcriptions"
SEGMENTS = [
    {"id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": " Hello there.", "tokens": [1, 2], "temperature": 0.0,
     "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01,
     "words": [{"word": "Hello", "start": 0.0, "end": 0.6}, {"word": "there", "start": 0.6, "end": 1.5}]},
    {"id": 1, "seek": 0, "start": 1.5, "end": 3725.25, "text": " General Kenobi.", "tokens": [3], "temperature": 0.0,
     "avg_logprob": -0.3, "compression_ratio": 1.0, "no_speech_prob": 0.02, "words": []},
]


class FakeWhisper:
    languages = ("en",)

    def __init__(self, *, gate: threading.Event | None = None) -> None:
        self.jobs = []
        self.gate = gate
        self.started = threading.Event()

    def load(self) -> None:
        pass

    def run(self, job) -> Transcript:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(60)  # held until the test opens it; a bound only so a broken test ends
        self.jobs.append(job)
        return Transcript(text="Hello there. General Kenobi.", language="en", duration_s=len(job.samples) / 16000,
                          segments=[dict(s) for s in SEGMENTS])


class FakeTTS:
    def load(self) -> None:
        pass

    def run(self, job) -> SpeechAudio:
        return SpeechAudio(samples=np.zeros(2400, np.float32), sample_rate=24000)


def wav_bytes(seconds: float = 1.0, rate: int = 22050, channels: int = 1, fmt: str = "WAV", subtype=None) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    out = io.BytesIO()
    sf.write(out, data, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def multipart(fields: dict | list, file: bytes | None, filename: str = "speech.wav") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields.items() if isinstance(fields, dict) else fields):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + file + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Harness:
    def __init__(self, *, asr=True, tts=False, backend=None, **cfg) -> None:
        self.whisper = backend or FakeWhisper()
        workers = []
        asr_worker = ModelWorker(self.whisper, name="speech-to-text", max_queue=cfg.pop("queue", 8)) if asr else None
        tts_worker = ModelWorker(FakeTTS(), name="text-to-speech") if tts else None
        for w in (asr_worker, tts_worker):
            if w is not None:
                w.start(timeout_s=5)
                workers.append(w)
        self.speech = SpeechModels(asr=asr_worker, asr_id="whisper-tiny.en" if asr else None,
                                   asr_languages=("en",) if asr else (), tts=tts_worker,
                                   tts_id="my-tts" if tts else None)
        self.client = testing.TestClient(create_app(ServerConfig(**cfg), FakeEngine(), served(), {},
                                                    speech=self.speech))

    def post(self, fields=None, file=b"", **kw):
        body, content_type = multipart(fields if fields is not None else {"model": "whisper-1"},
                                       wav_bytes() if file == b"" else file, **kw)
        return self.client.simulate_post(ROUTE, body=body, headers={"Content-Type": content_type})


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.speech.stop()


def test_json_is_the_default_and_the_audio_reaches_the_model_at_16k_mono(h):
    r = h.post(file=wav_bytes(seconds=2.0, rate=44100, channels=2))
    assert r.status_code == 200, r.text
    assert r.json == {"text": "Hello there. General Kenobi.", "usage": {"type": "duration", "seconds": 2}}
    job = h.whisper.jobs[0]
    assert job.samples.dtype == np.float32 and job.samples.ndim == 1 and abs(len(job.samples) - 32000) <= 1
    assert (job.language, job.prompt, job.temperature, job.word_timestamps) == (None, None, 0.0, False)


def test_language_prompt_and_temperature_are_passed_on(h):
    r = h.post({"model": "whisper-1", "language": "EN", "prompt": "Kenobi", "temperature": "0.4"})
    assert r.status_code == 200, r.text
    job = h.whisper.jobs[0]
    assert (job.language, job.prompt, job.temperature) == ("en", "Kenobi", 0.4)


def test_text_srt_and_vtt(h):
    assert h.post({"model": "m", "response_format": "text"}).text == "Hello there. General Kenobi.\n"
    srt = h.post({"model": "m", "response_format": "srt"})
    assert srt.text == ("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
                        "2\n00:00:01,500 --> 01:02:05,250\nGeneral Kenobi.\n")
    vtt = h.post({"model": "m", "response_format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
                        "00:00:01.500 --> 01:02:05.250\nGeneral Kenobi.\n")


def test_verbose_json_has_segments_by_default_and_words_when_asked(h):
    body = h.post({"model": "m", "response_format": "verbose_json"}).json
    assert body["task"] == "transcribe" and body["language"] == "english" and body["duration"] == 1.0
    assert [s["text"] for s in body["segments"]] == [" Hello there.", " General Kenobi."]
    assert set(body["segments"][0]) == {"id", "seek", "start", "end", "text", "tokens", "temperature",
                                        "avg_logprob", "compression_ratio", "no_speech_prob"}
    assert "words" not in body
    fields = [("model", "m"), ("response_format", "verbose_json"), ("timestamp_granularities[]", "word"),
              ("timestamp_granularities[]", "segment")]
    both = h.post(fields).json
    assert both["words"] == [{"word": "Hello", "start": 0.0, "end": 0.6}, {"word": "there", "start": 0.6, "end": 1.5}]
    assert len(both["segments"]) == 2 and h.whisper.jobs[-1].word_timestamps
    words_only = h.post([("model", "m"), ("response_format", "verbose_json"), ("timestamp_granularities[]", "word")])
    assert "segments" not in words_only.json and len(words_only.json["words"]) == 2


@pytest.mark.parametrize("file, named", [
    (wav_bytes(fmt="MP3"), "mp3"),
    (b"ID3\x03\x00" + b"\x00" * 200, "mp3"),
    (b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 200, "mp4/m4a"),
    (b"\x1aE\xdf\xa3" + b"\x00" * 200, "webm"),
    (b"this is plainly not audio" * 20, "unrecognised"),
])
def test_other_formats_are_415_naming_the_accepted_ones(h, file, named):
    r = h.post(file=file, filename="x.mp3")
    assert r.status_code == 415, r.text
    err = r.json["error"]
    assert err["code"] == "unsupported_audio_format" and err["param"] == "file"
    assert named in err["message"] and "wav, flac, ogg" in err["message"]
    assert h.whisper.jobs == []


@pytest.mark.parametrize("fmt, subtype", [("FLAC", None), ("OGG", "VORBIS"), ("OGG", "OPUS")])
def test_flac_and_ogg_are_decoded(h, fmt, subtype):
    r = h.post(file=wav_bytes(rate=48000 if subtype == "OPUS" else 22050, fmt=fmt, subtype=subtype))
    assert r.status_code == 200, r.text
    assert abs(len(h.whisper.jobs[0].samples) - 16000) < 400  # Opus pads its first frame


@pytest.mark.parametrize("fields, param, words", [
    ({"model": "m", "timestamp_granularities[]": "word"}, "timestamp_granularities", "verbose_json"),
    ({"model": "m", "response_format": "verbose_json", "timestamp_granularities[]": "char"},
     "timestamp_granularities.0", "word"),
    ({"model": "m", "language": "fr"}, "language", "(en)"),
    ({"model": "m", "response_format": "xml"}, "response_format", "json"),
    ({"model": "m", "temperature": "1.5"}, "temperature", "less than or equal to 1"),
    ({"model": "m", "stream": "true"}, "stream", "streaming is not supported"),
    ({"model": "m", "speed": "2"}, "speed", "Extra inputs"),
    ({}, "model", "missing"),
])
def test_bad_fields_are_400_naming_the_field(h, fields, param, words):
    r = h.post(fields)
    assert r.status_code == 400, r.text
    assert r.json["error"]["param"] == param and words in r.json["error"]["message"]


def test_missing_file_empty_file_and_json_body_are_400(h):
    body, content_type = multipart({"model": "m"}, None)
    r = h.client.simulate_post(ROUTE, body=body, headers={"Content-Type": content_type})
    assert r.status_code == 400 and r.json["error"]["param"] == "file"
    assert h.post(file=b"").status_code == 200  # b"" means "the default tone" in this helper
    body, content_type = multipart({"model": "m"}, b"x")
    assert h.client.simulate_post(ROUTE, body=body, headers={"Content-Type": content_type}).status_code == 415
    r = h.client.simulate_post(ROUTE, json={"model": "m"})
    assert r.status_code == 400 and "multipart/form-data" in r.json["error"]["message"]


def test_too_big_uploads_are_413_and_too_long_audio_is_400():
    h = Harness(max_audio_bytes=20_000, max_audio_seconds=0.5)
    try:
        r = h.post(file=wav_bytes(seconds=0.4))  # 17.6 kB: fits
        assert r.status_code == 200, r.text
        r = h.post(file=wav_bytes(seconds=1.0))  # 44 kB file, under the body allowance: the part is measured
        assert r.status_code == 413 and "--max-audio-bytes" in r.json["error"]["message"]
        r = h.post(file=b"\0" * 200_000)  # over the body allowance: refused from Content-Length
        assert r.status_code == 413
        r = h.post(file=wav_bytes(seconds=0.45, rate=8000))  # small file, but...
        assert r.status_code == 200
        r = h.post(file=wav_bytes(seconds=0.9, rate=8000))
        assert r.status_code == 400 and "--max-audio-seconds" in r.json["error"]["message"]
    finally:
        h.speech.stop()


def test_an_audio_upload_may_exceed_the_json_body_limit():
    h = Harness(max_body_bytes=10_000)
    try:
        assert h.post(file=wav_bytes(seconds=1.0)).status_code == 200  # 44 kB
        r = h.client.simulate_post("/v1/chat/completions", body=b"x" * 20_000,
                                   headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "--max-body-bytes" in r.json["error"]["message"]
    finally:
        h.speech.stop()


def test_without_an_asr_model_the_error_says_how_to_start_one():
    h = Harness(asr=False)
    r = h.post()
    assert r.status_code == 404
    assert "--asr-model whisper-tiny.en" in r.json["error"]["message"] and r.json["error"]["code"] == "model_not_found"


def test_strict_model_ids_refuse_other_names():
    h = Harness(strict_model_id=True)
    try:
        assert h.post({"model": "whisper-1"}).status_code == 404
        assert h.post({"model": "whisper-tiny.en"}).status_code == 200
    finally:
        h.speech.stop()


def test_models_list_the_speech_models_after_the_chat_model(h):
    ids = [m["id"] for m in h.client.simulate_get("/v1/models").json["data"]]
    assert ids == ["fake-model", "alias", "whisper-tiny.en"]
    assert h.client.simulate_get("/v1/models/whisper-tiny.en").status_code == 200


def test_a_full_queue_is_429_and_the_chat_routes_still_answer():
    gate = threading.Event()
    h = Harness(backend=FakeWhisper(gate=gate), queue=1)
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(h.post().status_code)) for _ in range(2)]
        # One at a time: started together, both could reach the queue before the worker takes
        # the first, and the second would be refused instead of waiting.
        threads[0].start()
        assert h.whisper.started.wait(30)  # one job runs, held by the gate...
        threads[1].start()
        deadline = time.monotonic() + 60  # ...and the other waits in the queue (slow on a loaded machine)
        while h.speech.asr._jobs.qsize() != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert h.speech.asr._jobs.qsize() == 1, "the second request never reached the queue"
        r = h.post()
        assert r.status_code == 429 and r.headers["retry-after"] == "5"
        chat = h.client.simulate_post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
        gate.set()
        for t in threads:
            t.join(5)
        assert results == [200, 200]
    finally:
        gate.set()
        h.speech.stop()


def test_speech_is_501_without_a_tts_model(h):
    r = h.client.simulate_post("/v1/audio/speech", json={"model": "tts-1", "input": "hi", "voice": "alloy"})
    assert r.status_code == 501 and r.headers["x-should-retry"] == "false"
    assert "--tts-model" in r.json["error"]["message"] and r.json["error"]["code"] == "tts_not_configured"


@pytest.mark.parametrize("fmt, check", [
    ("wav", lambda b: sf.info(io.BytesIO(b)).format == "WAV"),
    ("flac", lambda b: sf.info(io.BytesIO(b)).format == "FLAC"),
    ("pcm", lambda b: len(b) == 4800),
])
def test_speech_with_a_tts_model_returns_audio(fmt, check):
    h = Harness(asr=False, tts=True)
    try:
        r = h.client.simulate_post("/v1/audio/speech", json={"model": "my-tts", "input": "hi", "response_format": fmt})
        assert r.status_code == 200 and check(r.content)
        r = h.client.simulate_post("/v1/audio/speech", json={"model": "my-tts", "input": "hi", "response_format": "aac"})
        assert r.status_code == 400 and r.json["error"]["param"] == "response_format"
        ids = [m["id"] for m in h.client.simulate_get("/v1/models").json["data"]]
        assert ids[-1] == "my-tts"
    finally:
        h.speech.stop()


def test_errors_on_audio_routes_are_openai_shaped(h):
    r = h.client.simulate_post("/v1/audio/speech", body=b"{", headers={"Content-Type": "application/json"})
    assert set(json.loads(r.text)) == {"error"}
