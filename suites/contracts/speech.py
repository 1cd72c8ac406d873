"""Speech for the speech-to-text contract: espeak-ng says a sentence, and the word error rate
says how much of it came back.

espeak-ng is Debian's formant synthesiser (`apt-get install espeak-ng`): robotic but
deterministic, and free of any model download, so the round trip is reproducible anywhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
import wave
from pathlib import Path

SENTENCES_FILE = Path(__file__).with_name("speech_sentences.toml")
# Real recordings start and end in silence; speech cut flush at sample 0 loses Whisper its first word.
PAD_S = 0.5

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def load_sentences(path: Path = SENTENCES_FILE) -> dict:
    """{"sentences": [...], "voice": ..., "words_per_minute": ...} from the data file."""
    data = tomllib.loads(Path(path).read_text())
    if not data.get("sentences"):
        raise ValueError(f"{path} lists no sentences")
    return data


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, path: Path, *, voice: str = "en-us", words_per_minute: int = 150) -> Path:
    """Speak `text` into a 16-bit mono WAV at `path`, with PAD_S of silence either side."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    path = Path(path)
    raw = path.with_name(path.name + ".raw.wav")
    # The text goes through stdin so that nothing in it can read as an option.
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), "--stdin"],
                   input=text.encode("utf-8"), check=True, capture_output=True)
    with wave.open(str(raw), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    silence = b"\0" * (int(params.framerate * PAD_S) * params.sampwidth * params.nchannels)
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(silence + frames + silence)
    raw.unlink()
    return path


def _below_thousand(n: int) -> list[str]:
    words = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def number_words(n: int) -> str:
    """0 <= n < 10**9 spelled out: 3 -> "three", 1205 -> "one thousand two hundred five"."""
    if not 0 <= n < 10**9:
        return str(n)
    words = []
    for scale, name in ((10**6, "million"), (1000, "thousand")):
        if n >= scale:
            words += [*_below_thousand(n // scale), name]
            n %= scale
    if n or not words:
        words += _below_thousand(n)
    return " ".join(words)


def normalise(text: str) -> str:
    """Lowercase, digits spelled out, hyphens as spaces, punctuation and extra spaces gone, so
    "Walk for 5 minutes." and "walk for five minutes" score as the same words."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"\d+(?:\.\d+)?", lambda m: _spell(m.group()), text)
    text = re.sub(r"[-–—/]", " ", text)
    text = re.sub(r"[^\w\s']|(?<!\w)'|'(?!\w)", " ", text)  # keep only in-word apostrophes
    return " ".join(text.split())


def _spell(number: str) -> str:
    whole, _, fraction = number.partition(".")
    spoken = number_words(int(whole))
    if fraction:
        spoken += " point " + " ".join(_ONES[int(d)] for d in fraction)
    return f" {spoken} "


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: word edits over all pairs divided by all reference words, after normalise()."""
    import jiwer

    if len(references) != len(hypotheses) or not references:
        raise ValueError("need the same, non-zero number of references and hypotheses")
    refs = [normalise(r) for r in references]
    if not all(refs):
        raise ValueError("a reference is empty after normalising")
    hyps = [normalise(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))
