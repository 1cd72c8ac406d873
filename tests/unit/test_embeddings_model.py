"""Pooling as sentence-transformers declares it, special-token framing, and padding that changes nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import pytest

from serving.embeddings.model import Embedder, special_frame
from serving.embeddings.pooling import Pooling, pool, read_pooling


def _write_st(folder, pooling: dict, *, normalize: bool = True):
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))


def test_minilm_declares_mean_pooling_and_normalisation(tmp_path):
    _write_st(tmp_path, {"word_embedding_dimension": 384, "pooling_mode_cls_token": False,
                         "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                         "pooling_mode_mean_sqrt_len_tokens": False})
    assert read_pooling(tmp_path) == Pooling("mean", True)


def test_cls_pooling_without_normalize(tmp_path):
    _write_st(tmp_path, {"pooling_mode_cls_token": True}, normalize=False)
    assert read_pooling(tmp_path) == Pooling("cls", False)


def test_a_folder_without_sentence_transformers_files_gets_mean_and_normalise(tmp_path):
    assert read_pooling(tmp_path) == Pooling()


def test_unsupported_pooling_is_refused(tmp_path):
    _write_st(tmp_path, {"pooling_mode_max_tokens": True})
    with pytest.raises(ValueError, match="not supported"):
        read_pooling(tmp_path)


def test_mean_pooling_ignores_padding_and_normalises():
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 1, 1]], dtype=np.float32)
    out = np.array(pool(mx.array(hidden), mx.array(mask), Pooling("mean", True)))
    expected = np.stack([hidden[0, :2].mean(0), hidden[1].mean(0)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    raw = np.array(pool(mx.array(hidden), mx.array(mask), Pooling("cls", False)))
    np.testing.assert_array_equal(raw, hidden[:, 0])


class FrameTokenizer:
    """Adds 101 before and 102 after, as BERT's does."""

    pad_token_id = 0

    def __call__(self, texts, add_special_tokens=True):
        def one(text):
            ids = [ord(c) for c in text]
            return [101, *ids, 102] if add_special_tokens else ids
        return {"input_ids": one(texts) if isinstance(texts, str) else [one(t) for t in texts]}


@dataclass
class _Out:
    last_hidden_state: mx.array


class ContextModel:
    """Each token's state depends on the tokens it may attend to, so a mask bug would show."""

    def __call__(self, ids, attention_mask):
        emb = mx.stack([ids.astype(mx.float32), mx.ones(ids.shape), (ids % 7).astype(mx.float32)], axis=-1)
        weights = attention_mask[:, None, :]
        context = (weights @ emb) / mx.maximum(weights.sum(axis=-1, keepdims=True), 1)
        return _Out(emb + context)


def _embedder():
    return Embedder(ContextModel(), FrameTokenizer(), pooling=Pooling(), max_tokens=16, vocab_size=200,
                    dimensions=3, pad_id=0)


def test_special_frame_is_read_from_the_tokenizer():
    assert special_frame(FrameTokenizer()) == ((101,), (102,))


def test_frame_adds_special_tokens_once():
    e = _embedder()
    assert e.frame([5, 6]) == [101, 5, 6, 102]
    assert e.frame([101, 5, 6, 102]) == [101, 5, 6, 102]
    assert e.frame([101, 5]) == [101, 101, 5, 102]
    assert e.tokenize(["ab"]) == [[101, 97, 98, 102]]


def test_padding_a_sequence_in_a_batch_does_not_change_its_vector():
    e = _embedder()
    short, long = [101, 5, 102], [101, 9, 8, 7, 6, 5, 102]
    alone = e.forward([short])
    together = e.forward([long, short])
    assert together.dtype == np.float32 and together.shape == (2, 3)
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-6)
