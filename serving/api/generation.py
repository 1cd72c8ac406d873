"""Shared steps between chat and completions: model id, limits, sampling."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ServerConfig
from ..engine.request import GenerationRequest, SamplingParams
from .errors import ContextLengthExceeded, InvalidRequest, ModelNotFound
from .schemas import SamplingFields


@dataclass(frozen=True)
class ServedModel:
    """What the API needs to know about the one loaded model."""

    model_id: str
    aliases: tuple[str, ...]
    context_length: int
    vocab_size: int
    weights_sha256: str
    source: str

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.model_id, *self.aliases)


def check_model(requested: str | None, served: ServedModel, config: ServerConfig) -> None:
    if config.strict_model_id and requested is not None and requested not in served.ids:
        raise ModelNotFound(
            f"model {requested!r} is not served here; available: {', '.join(served.ids)}",
            param="model",
        )


def resolve_max_tokens(requested: int | None, *, prompt_len: int, served: ServedModel,
                       config: ServerConfig) -> int:
    """Apply the server default and ceiling, then fit what the context has left.

    Above the ceiling a request is clamped (default) or refused with 400,
    following --over-ceiling.
    """
    if requested is not None and requested <= 0:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    if prompt_len >= served.context_length:
        raise ContextLengthExceeded(
            f"the prompt has {prompt_len} tokens; this model's context is {served.context_length}",
            param="messages",
        )
    wanted = requested if requested is not None else config.max_tokens_default
    if wanted > config.max_tokens_ceiling:
        if config.over_ceiling == "reject":
            raise InvalidRequest(
                f"max_tokens {wanted} exceeds this server's ceiling of {config.max_tokens_ceiling}",
                param="max_tokens",
            )
        wanted = config.max_tokens_ceiling
    return min(wanted, served.context_length - prompt_len)


def sampling_params(body: SamplingFields, config: ServerConfig, *, vocab_size: int) -> SamplingParams:
    bias = {}
    for key, value in (body.logit_bias or {}).items():
        token = int(key)
        if not 0 <= token < vocab_size:
            raise InvalidRequest(f"logit_bias token id {token} is outside the vocabulary", param="logit_bias")
        bias[token] = value
    return SamplingParams(
        temperature=config.default_temperature if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        min_p=body.min_p or 0.0,
        seed=body.seed,
        frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        logit_bias=bias,
    )


def build_request(body: SamplingFields, prompt_tokens: list[int], *, served: ServedModel,
                  config: ServerConfig, vocab_size: int) -> GenerationRequest:
    check_model(body.model, served, config)
    if not prompt_tokens:
        raise InvalidRequest("the prompt is empty", param="prompt")
    return GenerationRequest(
        prompt_tokens=prompt_tokens,
        max_tokens=resolve_max_tokens(body.requested_max_tokens, prompt_len=len(prompt_tokens),
                                      served=served, config=config),
        sampling=sampling_params(body, config, vocab_size=vocab_size),
        stop=body.stop_list,
    )
