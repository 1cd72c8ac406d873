"""Speech to text on the real whisper-tiny.en (converted from the PyPI CTranslate2 wheel), served
beside the default chat model, through the official openai SDK; espeak-ng supplies the speech."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import openai
import pytest
import soundfile as sf

from harness.sut import free_port, launched
from suites.contracts.speech import espeak_available, load_sentences, synthesize, word_error_rate

from .conftest import DEFAULT_MODEL

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)"),
]

ASR_MODEL = "whisper-tiny.en"
MAX_WER = 0.10  # the acceptance bar, over all sentences together


@pytest.fixture(scope="module")
def asr_server(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("asr-server") / "server.log"
    argv = [sys.executable, "-m", "serving", "serve", "--model", DEFAULT_MODEL, "--asr-model", ASR_MODEL,
            "--port", str(port), "--max-concurrency", "4"]
    with launched(argv, port=port, log_path=log_path, ready_timeout_s=1800) as running:
        yield running


@pytest.fixture(scope="module")
def client(asr_server):
    return openai.OpenAI(base_url=asr_server.base_url + "/v1", api_key="unused", max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """Every sentence of the data file, spoken by espeak-ng: [(text, wav path)]."""
    data = load_sentences()
    folder = tmp_path_factory.mktemp("speech")
    return [(text, synthesize(text, folder / f"s{i:02d}.wav", voice=data["voice"],
                              words_per_minute=data["words_per_minute"]))
            for i, text in enumerate(data["sentences"])]


def test_models_list_the_chat_and_the_speech_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == DEFAULT_MODEL and ASR_MODEL in ids


def test_espeak_round_trip_word_error_rate(client, spoken, record_property):
    references, hypotheses = [], []
    for text, path in spoken:
        with open(path, "rb") as audio:
            result = client.audio.transcriptions.create(model=ASR_MODEL, file=audio)
        references.append(text)
        hypotheses.append(result.text)
    wer = word_error_rate(references, hypotheses)
    record_property("speech_wer", wer)
    print(json.dumps({"sentences": len(references), "wer": round(wer, 4),
                      "pairs": [{"reference": r, "hypothesis": h} for r, h in zip(references, hypotheses)]},
                     indent=1))
    assert len(references) >= 10
    assert wer <= MAX_WER, f"WER {wer:.3f} over {len(references)} sentences: {list(zip(references, hypotheses))}"


def test_text_srt_vtt_and_verbose_json(client, spoken):
    text, path = spoken[1]  # "Please open the window before you leave the room."
    audio = path.read_bytes()
    plain = client.audio.transcriptions.create(model=ASR_MODEL, file=("a.wav", audio), response_format="text")
    assert isinstance(plain, str) and "window" in plain.lower()
    srt = client.audio.transcriptions.create(model=ASR_MODEL, file=("a.wav", audio), response_format="srt")
    assert srt.startswith("1\n00:00:0") and " --> " in srt and "window" in srt.lower()
    vtt = client.audio.transcriptions.create(model=ASR_MODEL, file=("a.wav", audio), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:0") and "window" in vtt.lower()
    verbose = client.audio.transcriptions.create(model=ASR_MODEL, file=("a.wav", audio), response_format="verbose_json",
                                                 timestamp_granularities=["word", "segment"])
    assert verbose.language == "english" and verbose.duration == pytest.approx(sf.info(path).duration, abs=0.01)
    assert verbose.segments and all(0 <= s.start < s.end <= verbose.duration + 0.5 for s in verbose.segments)
    words = [w.word.lower() for w in verbose.words]
    assert "window" in words and words.index("open") < words.index("window") < words.index("room")
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts) and verbose.words[-1].end <= verbose.duration + 0.5


def test_flac_and_ogg_uploads_transcribe_like_the_wav(client, spoken):
    text, path = spoken[1]
    samples, rate = sf.read(path, dtype="float32")
    for fmt, subtype in (("FLAC", None), ("OGG", "VORBIS")):
        buffer = io.BytesIO()
        sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
        result = client.audio.transcriptions.create(model=ASR_MODEL, file=(f"a.{fmt.lower()}", buffer.getvalue()))
        assert word_error_rate([text], [result.text]) <= 0.2, (fmt, result.text)


@pytest.mark.parametrize("name", ["speech.mp3", "garbage.wav"])
def test_mp3_and_garbage_are_415(client, spoken, name):
    if name.endswith(".mp3"):
        samples, rate = sf.read(spoken[0][1], dtype="float32")
        buffer = io.BytesIO()
        sf.write(buffer, samples, rate, format="MP3")
        data = buffer.getvalue()
    else:
        data = np.random.default_rng(0).bytes(4096)
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model=ASR_MODEL, file=(name, data))
    assert caught.value.status_code == 415
    assert "wav, flac, ogg" in caught.value.body["message"]


def test_word_timestamps_need_verbose_json(client, spoken):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model=ASR_MODEL, file=("a.wav", spoken[0][1].read_bytes()),
                                           timestamp_granularities=["word"])
    assert caught.value.body["param"] == "timestamp_granularities"


def test_speech_is_501_with_a_clear_message(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.")
    assert caught.value.status_code == 501
    assert "--tts-model" in caught.value.body["message"]


def test_chat_still_answers_beside_the_speech_model(client):
    r = client.chat.completions.create(model=DEFAULT_MODEL, max_tokens=8,
                                       messages=[{"role": "user", "content": "Say hello."}])
    assert r.choices[0].message.content
