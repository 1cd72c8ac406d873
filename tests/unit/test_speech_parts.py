"""The speech pieces on their own: audio decoding, the model worker, and the WER scorer."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import soundfile as sf

from serving.speech.decode import AudioError, decode_audio, mono_16k
from serving.speech.worker import ModelWorker, QueueFull, WorkerDown
from suites.contracts.speech import load_sentences, normalise, number_words, word_error_rate


def _encode(data, rate, **kw) -> bytes:
    out = io.BytesIO()
    sf.write(out, data, rate, **kw)
    return out.getvalue()


def test_decoding_averages_channels_and_resamples():
    left = np.full(22050, 0.5, np.float32)
    audio = decode_audio(_encode(np.stack([left, -left * 0], axis=1), 22050, format="WAV"), max_seconds=5)
    assert audio.container == "wav" and audio.duration_s == pytest.approx(1.0)
    assert len(audio.samples) == 16000 and abs(float(np.median(audio.samples)) - 0.25) < 1e-3


def test_a_16k_mono_input_passes_through_untouched():
    x = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    assert np.array_equal(mono_16k(x, 16000), x)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"garbage" * 50, "format"),
    (_encode(np.zeros((0, 1), np.float32), 16000, format="WAV"), "empty"),
    (_encode(np.zeros(16000 * 3, np.float32), 16000, format="FLAC"), "too_long"),
    (_encode(np.zeros(1600, np.float32), 16000, format="AIFF"), "format"),
])
def test_refusals_carry_their_reason(data, reason):
    with pytest.raises(AudioError) as caught:
        decode_audio(data, max_seconds=2)
    assert caught.value.reason == reason


def test_a_truncated_file_is_refused_not_crashed():
    data = _encode(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000, format="FLAC")
    with pytest.raises(AudioError):
        decode_audio(data[: len(data) // 2] + b"\xff" * 64, max_seconds=5)


class _Backend:
    def __init__(self, *, fail_load=False, gate=None):
        self.fail_load, self.gate, self.thread = fail_load, gate, None

    def load(self):
        if self.fail_load:
            raise OSError("no weights")
        self.thread = threading.current_thread()

    def run(self, job):
        if self.gate:
            self.gate.wait(5)
        if job == "boom":
            raise ValueError("bad job")
        assert threading.current_thread() is self.thread  # loaded and run on one thread (MLX streams)
        return job * 2


def test_a_failed_load_is_raised_by_start():
    worker = ModelWorker(_Backend(fail_load=True), name="asr")
    with pytest.raises(WorkerDown, match="no weights"):
        worker.start(timeout_s=5)
    with pytest.raises(WorkerDown):
        worker.submit(1)


def test_a_failing_job_does_not_end_the_worker():
    worker = ModelWorker(_Backend(), name="asr")
    worker.start(timeout_s=5)
    with pytest.raises(ValueError, match="bad job"):
        worker.submit("boom").result(5)
    assert worker.submit(21).result(5) == 42
    worker.stop()
    assert not worker.alive()


def test_the_queue_is_bounded_and_a_cancelled_job_is_skipped():
    gate = threading.Event()
    worker = ModelWorker(_Backend(gate=gate), name="asr", max_queue=1)
    worker.start(timeout_s=5)
    running = worker.submit(1)
    for _ in range(500):
        if running.running():
            break
        threading.Event().wait(0.01)
    waiting = worker.submit(2)
    with pytest.raises(QueueFull):
        worker.submit(3)
    assert waiting.cancel()
    gate.set()
    assert running.result(5) == 2 and worker.submit(4).result(5) == 8
    worker.stop()


def test_numbers_are_spelled_out():
    assert number_words(0) == "zero" and number_words(15) == "fifteen" and number_words(40) == "forty"
    assert number_words(1205) == "one thousand two hundred five"
    assert number_words(3_000_021) == "three million twenty one"


def test_normalising_ignores_case_punctuation_digits_and_hyphens():
    assert normalise("Walk for 5 minutes!") == normalise("walk for five minutes")
    assert normalise("The door-bell rang, didn’t it?") == "the door bell rang didn't it"
    assert normalise("It costs 1,000 or 2.5") == "it costs one thousand or two point five"


def test_word_error_rate_is_over_the_whole_corpus():
    assert word_error_rate(["the cat sat", "on the mat"], ["The cat sat.", "on a mat"]) == pytest.approx(1 / 6)
    assert word_error_rate(["one two"], [""]) == 1.0
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])


def test_the_sentence_file_has_enough_plain_sentences():
    data = load_sentences()
    assert len(data["sentences"]) >= 12 and data["voice"]
    assert all(s == s.strip() and not any(c.isdigit() for c in s) for s in data["sentences"])
