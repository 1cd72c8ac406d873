"""Neutral request options every dialect shares: model id, output limits, sampling.

Adapters pass their own field names (`param=`) so errors name the field the
client actually sent.
"""

from __future__ import annotations

from typing import Mapping

from ..config import ServerConfig
from ..engine.request import GenerationRequest, LogitsProcessorFactory, SamplingParams
from .dialect import ServedModel
from .errors import ContextLengthExceeded, InvalidRequest, ModelNotFound


def check_model(requested: str | None, served: ServedModel, config: ServerConfig) -> None:
    if config.strict_model_id and requested is not None and requested not in served.ids:
        raise ModelNotFound(
            f"model {requested!r} is not served here; available: {', '.join(served.ids)}",
            param="model",
        )


def resolve_max_tokens(requested: int | None, *, prompt_len: int, served: ServedModel,
                       config: ServerConfig, param: str = "max_tokens",
                       prompt_param: str = "messages") -> int:
    """Apply the server default and ceiling, then fit what the context has left.

    Above the ceiling a request is clamped (default) or refused with 400,
    following --over-ceiling.
    """
    if requested is not None and requested <= 0:
        raise InvalidRequest(f"{param} must be at least 1", param=param)
    if prompt_len >= served.context_length:
        raise ContextLengthExceeded(
            f"the prompt has {prompt_len} tokens; this model's context is {served.context_length}",
            param=prompt_param,
        )
    wanted = requested if requested is not None else config.max_tokens_default
    if wanted > config.max_tokens_ceiling:
        if config.over_ceiling == "reject":
            raise InvalidRequest(
                f"{param} {wanted} exceeds this server's ceiling of {config.max_tokens_ceiling}",
                param=param,
            )
        wanted = config.max_tokens_ceiling
    return min(wanted, served.context_length - prompt_len)


def token_bias(bias: Mapping[str, float] | None, *, vocab_size: int, param: str = "logit_bias") -> dict[int, float]:
    out = {}
    for key, value in (bias or {}).items():
        token = int(key)
        if not 0 <= token < vocab_size:
            raise InvalidRequest(f"{param} token id {token} is outside the vocabulary", param=param)
        out[token] = value
    return out


def sampling_params(config: ServerConfig, *, temperature: float | None = None, top_p: float | None = None,
                    top_k: int | None = None, min_p: float | None = None, seed: int | None = None,
                    frequency_penalty: float | None = None, presence_penalty: float | None = None,
                    repetition_penalty: float | None = None,
                    logit_bias: dict[int, float] | None = None) -> SamplingParams:
    if config.deterministic and temperature is not None and temperature > 0:
        # Refused, not overridden: an override would be invisible to clients that never read headers.
        raise InvalidRequest(
            f"temperature {temperature:g} is not served here: this server runs in deterministic mode "
            "(--deterministic: greedy decoding only); send temperature 0 or leave it out",
            param="temperature", code="deterministic_mode")
    return SamplingParams(
        temperature=config.default_temperature if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=top_k or 0,
        min_p=min_p or 0.0,
        seed=seed,
        frequency_penalty=frequency_penalty or 0.0,
        presence_penalty=presence_penalty or 0.0,
        repetition_penalty=repetition_penalty or 1.0,
        logit_bias=logit_bias or {},
    )


def generation_request(prompt_tokens: list[int], *, max_tokens: int, sampling: SamplingParams,
                       config: ServerConfig, stop: tuple[str, ...] = (), logprobs: int | None = None,
                       logits_processor: LogitsProcessorFactory | None = None,
                       prompt_param: str = "messages") -> GenerationRequest:
    if not prompt_tokens:
        raise InvalidRequest("the prompt is empty", param=prompt_param)
    return GenerationRequest(
        prompt_tokens=list(prompt_tokens),
        max_tokens=max_tokens,
        sampling=sampling,
        stop=stop,
        logprobs=logprobs,
        logits_processor=logits_processor,
        timeout_s=config.request_timeout_s or None,
    )
