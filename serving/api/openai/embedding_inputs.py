"""OpenAI's embeddings `input`, checked and turned into the token sequences the model sees.

OpenAI accepts four shapes: a string, a list of strings, a list of token ids (one input), or
a list of token-id lists. Token ids are a text's tokens, as the model's tokenizer makes them
without special tokens; the model's own special tokens ([CLS] ... [SEP] for BERT) are added
here, unless a sequence already starts and ends with them.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import ContextLengthExceeded, InvalidRequest

# OpenAI's own limit on the number of inputs in one request.
MAX_INPUTS = 2048
SHAPES = "a string, a list of strings, a list of token ids, or a list of token-id lists"


class TextSide(Protocol):
    max_tokens: int
    vocab_size: int

    def tokenize(self, texts: list[str]) -> list[list[int]]: ...
    def frame(self, ids: list[int]) -> list[int]: ...


def _is_token(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "list", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _a(value) -> str:
    kind = _kind(value)
    return kind if kind == "null" else ("an " if kind[0] in "aeiou" else "a ") + kind


def _checked_ids(ids: list, *, where: str, vocab_size: int) -> list[int]:
    if not ids:
        raise InvalidRequest(f"{where} is an empty list of token ids; send at least one token", param="input")
    for j, token in enumerate(ids):
        if not _is_token(token):
            raise InvalidRequest(f"{where}[{j}] is {_a(token)}; token ids are integers", param="input")
        if not 0 <= token < vocab_size:
            raise InvalidRequest(f"{where}[{j}]: token id {token} is outside the vocabulary (0 to {vocab_size - 1})",
                                 param="input")
    return ids


def _texts(raw: list, where: list[str]) -> list[str]:
    for text, name in zip(raw, where):
        if text == "":
            raise InvalidRequest(f"{name} is an empty string; every input needs some text", param="input")
    return raw


def sequences(raw, text: TextSide, *, model_id: str) -> list[list[int]]:
    """The framed token sequence of every input, in order; a 400 naming the input for anything wrong."""
    if isinstance(raw, str):
        seqs, names = text.tokenize(_texts([raw], ["input"])), ["input"]
    elif isinstance(raw, list):
        if not raw:
            raise InvalidRequest("input is an empty list; send at least one input", param="input")
        if len(raw) > MAX_INPUTS:
            raise InvalidRequest(f"input has {len(raw)} items; at most {MAX_INPUTS} are allowed in one request",
                                 param="input")
        names = [f"input[{i}]" for i in range(len(raw))]
        if all(isinstance(item, str) for item in raw):
            seqs = text.tokenize(_texts(raw, names))
        elif all(_is_token(item) for item in raw):
            seqs, names = [text.frame(_checked_ids(raw, where="input", vocab_size=text.vocab_size))], ["input"]
        elif all(isinstance(item, list) for item in raw):
            seqs = [text.frame(_checked_ids(item, where=name, vocab_size=text.vocab_size))
                    for item, name in zip(raw, names)]
        else:
            kinds = sorted({_kind(item) for item in raw})
            raise InvalidRequest(f"input must be {SHAPES}; this list mixes {', '.join(kinds)}", param="input")
    else:
        raise InvalidRequest(f"input must be {SHAPES}, not {_a(raw)}", param="input")
    for seq, name in zip(seqs, names):
        if len(seq) > text.max_tokens:
            raise ContextLengthExceeded(
                f"{name} is {len(seq)} tokens long (special tokens included); {model_id} takes at most "
                f"{text.max_tokens} tokens per input. Shorten or split it.", param="input")
    return seqs
