"""POST /v1/embeddings in OpenAI's shape: the request body, the response, and the resource."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ...config import ServerConfig
from ...embeddings import EmbeddingBusy, EmbeddingDown, EmbeddingFailed, EmbeddingTimeout
from ..dialect import ServedModel
from ..errors import (EngineFailure, EngineUnavailable, GenerationTimeout, InvalidRequest, ModelNotFound,
                      RateLimited)
from ..options import check_model
from ..request_body import read_json, validate
from .embedding_inputs import sequences
from .schemas import _Body

NO_EMBEDDING_MODEL = ("this server serves no embedding model; start it with --embedding-model all-minilm-l6-v2 "
                      "(a catalog id, or a local mlx-embeddings folder)")
RETRY_AFTER_S = "1"


class EmbeddingsRequest(_Body):
    model: str | None = None
    input: Any = Field(...)
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def served_embedding_model(info) -> ServedModel:
    """The embedding model as /v1/models and the model-id check see it."""
    return ServedModel(model_id=info.model_id, aliases=(), context_length=info.max_tokens,
                       vocab_size=info.vocab_size, weights_sha256=info.weights_sha256, source=info.source)


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # OpenAI's base64 is the raw little-endian float32 bytes; its SDK decodes with numpy.
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(vector, dtype=np.float32).tolist()


def response_body(vectors: np.ndarray, *, encoding_format: str, model_id: str, prompt_tokens: int) -> dict:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
                 for i, v in enumerate(vectors)],
        "model": model_id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _check_dimensions(dimensions: int | None, info) -> None:
    if dimensions is not None and dimensions != info.dimensions:
        # Shortening and renormalising suits models trained for it (Matryoshka, as OpenAI's
        # text-embedding-3); this one was not, so a shortened vector would be a worse one.
        raise InvalidRequest(
            f"dimensions {dimensions} is not available: {info.model_id} makes {info.dimensions}-dimensional vectors "
            f"and cannot shorten them; omit dimensions or send {info.dimensions}", param="dimensions")


class Embeddings:
    """POST /v1/embeddings; `service` None (no --embedding-model) answers every request with a 404."""

    def __init__(self, service, config: ServerConfig) -> None:
        self.service = service
        self.config = config
        self.served = served_embedding_model(service.info) if service is not None else None

    def on_post(self, req, resp):
        if self.service is None:
            raise ModelNotFound(NO_EMBEDDING_MODEL, param="model")
        body = validate(read_json(req, max_bytes=self.config.max_body_bytes), EmbeddingsRequest)
        check_model(body.model, self.served, self.config)
        info = self.service.info
        _check_dimensions(body.dimensions, info)
        seqs = sequences(body.input, self.service.text, model_id=info.model_id)
        timeout = self.config.request_timeout_s or None
        try:
            vectors = self.service.embed(seqs, timeout_s=timeout)
        except EmbeddingBusy as exc:
            raise RateLimited(f"the server is busy: {exc}; retry shortly",
                              headers={"Retry-After": RETRY_AFTER_S}) from None
        except EmbeddingDown as exc:
            raise EngineUnavailable(f"the embedding worker is not running: {exc}") from None
        except EmbeddingTimeout as exc:
            raise GenerationTimeout(str(exc)) from None
        except EmbeddingFailed as exc:
            raise EngineFailure(str(exc)) from None
        resp.media = response_body(vectors, encoding_format=body.encoding_format or "float",
                                   model_id=self.served.model_id, prompt_tokens=sum(map(len, seqs)))
