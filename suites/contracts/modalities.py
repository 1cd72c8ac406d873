"""The verdicts for the endpoints beside chat, shared by every client that speaks them.

A client driver takes its inputs from here (embedding_texts, spoken_sentences), makes its own
calls, and hands the results back to be judged the same way whichever client made them:

  embeddings     paraphrase pairs must score a higher cosine than an unrelated sentence, for
                 every triple in the case (`triples = [[a, paraphrase_of_a, unrelated], ...]`);
                 the vectors must have one length and be finite.
  transcription  espeak-ng speaks the sentences of speech_sentences.toml, the client sends each
                 one to /v1/audio/transcriptions, and the corpus word error rate must be at
                 most `max_wer` (default 0.10). Every reference/hypothesis pair is kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .driver import Blocked, Case, Outcome, Target, check
from . import speech

Vector = Sequence[float]


def _cosine(a: Vector, b: Vector) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def embedding_texts(case: Case) -> list[str]:
    """The case's triples, flattened: one request embeds them all."""
    triples = case.args.get("triples") or []
    if not triples or any(len(t) != 3 for t in triples):
        raise ValueError("an embeddings case needs triples = [[text, paraphrase, unrelated], ...]")
    return [text for triple in triples for text in triple]


def embedding_outcome(case: Case, vectors: list[Vector], *, via: str) -> Outcome:
    triples = case.args["triples"]
    texts = embedding_texts(case)
    if len(vectors) != len(texts):
        return check(False, "", f"{via}: {len(vectors)} vectors for {len(texts)} inputs")
    sizes = {len(v) for v in vectors}
    finite = all(math.isfinite(x) for v in vectors for x in v)
    scores = []
    for i in range(len(triples)):
        a, b, c = vectors[3 * i: 3 * i + 3]
        scores.append((round(_cosine(a, b), 3), round(_cosine(a, c), 3)))
    ordered = sum(1 for close, far in scores if close > far)
    ok = len(sizes) == 1 and finite and ordered == len(triples)
    return check(ok, f"{via}: {len(texts)} vectors of {sizes.pop() if len(sizes) == 1 else sizes}; paraphrases "
                     f"scored above the unrelated sentence in {ordered}/{len(triples)} (cosines {scores})",
                 f"{via}: sizes {sorted(sizes)}, finite {finite}, paraphrase above unrelated in "
                 f"{ordered}/{len(triples)} (cosines {scores})", cosines=scores)


def spoken_sentences(target: Target) -> list[tuple[str, Path]]:
    """(sentence, wav file) for every sentence of the data file, spoken by espeak-ng."""
    if not speech.espeak_available():
        raise Blocked("espeak-ng is not installed (apt-get install espeak-ng): no speech to send")
    data = speech.load_sentences()
    folder = target.workdir / "speech"
    folder.mkdir(exist_ok=True)
    return [(sentence, speech.synthesize(sentence, folder / f"sentence-{i:02d}.wav", voice=data.get("voice", "en-us"),
                                         words_per_minute=int(data.get("words_per_minute", 150))))
            for i, sentence in enumerate(data["sentences"])]


def transcription_outcome(case: Case, heard: list[tuple[str, str]], *, via: str) -> Outcome:
    """`heard`: (reference sentence, the client's transcription of it)."""
    limit = float(case.args.get("max_wer", 0.10))
    pairs = [{"reference": ref, "hypothesis": hyp.strip()} for ref, hyp in heard]
    wer = speech.word_error_rate([p["reference"] for p in pairs], [p["hypothesis"] for p in pairs])
    return check(wer <= limit, f"{via}: word error rate {wer:.1%} over {len(pairs)} espeak-ng sentences "
                               f"(limit {limit:.0%})",
                 f"{via}: word error rate {wer:.1%} over {len(pairs)} sentences, above {limit:.0%}",
                 wer=round(wer, 4), sentences=len(pairs), max_wer=limit, pairs=pairs)
