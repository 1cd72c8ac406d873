"""GGUF tensor names and layouts, translated to the Hugging Face layout mlx-lm loads.

Pure numpy, so the mapping and the q/k un-permutation can be unit-tested without a model file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np


@dataclass(frozen=True)
class ArchInfo:
    """What the converter must know about one GGUF `general.architecture`."""

    model_type: str  # mlx-lm picks its model module by this
    hf_class: str  # written to config.json "architectures" for HF tooling
    # llama.cpp's convert script interleaves the rotary halves of q/k rows only for
    # llama-family models (it rotates adjacent pairs; HF rotates halves).
    permute_qk: bool
    # qwen2 always carries q/k/v biases and mlx-lm's qwen2 module always expects them.
    qkv_bias: bool


ARCHITECTURES = MappingProxyType(
    {
        "llama": ArchInfo("llama", "LlamaForCausalLM", permute_qk=True, qkv_bias=False),
        "qwen2": ArchInfo("qwen2", "Qwen2ForCausalLM", permute_qk=False, qkv_bias=True),
    }
)

_GLOBAL_NAMES = MappingProxyType(
    {
        "token_embd": "model.embed_tokens",
        "output_norm": "model.norm",
        "output": "lm_head",
    }
)

_BLOCK_NAMES = MappingProxyType(
    {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
)

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^([a-z_]+)\.(weight|bias)$")


class UnsupportedTensorError(ValueError):
    """A GGUF tensor the converter has no HF name for.

    Raised rather than skipped: dropping a tensor silently yields a model that loads
    (mlx-lm is strict only about missing names) but may generate garbage.
    """


def architecture_info(architecture: str) -> ArchInfo:
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(
            f"GGUF architecture {architecture!r} is not supported (supported: {known})"
        ) from None


def hf_tensor_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    block = _BLOCK_RE.match(gguf_name)
    if block:
        index, part, kind = block.groups()
        if part in _BLOCK_NAMES:
            return f"model.layers.{index}.{_BLOCK_NAMES[part]}.{kind}"
    else:
        top = _GLOBAL_RE.match(gguf_name)
        if top and top.group(1) in _GLOBAL_NAMES:
            return f"{_GLOBAL_NAMES[top.group(1)]}.{top.group(2)}"
    raise UnsupportedTensorError(f"no Hugging Face name for GGUF tensor {gguf_name!r}")


def qk_head_count(gguf_name: str, *, n_head: int, n_head_kv: int) -> int | None:
    """Heads to un-permute over for a q/k tensor, None for every other tensor."""
    block = _BLOCK_RE.match(gguf_name)
    if not block:
        return None
    part = block.group(2)
    if part == "attn_q":
        return n_head
    if part == "attn_k":
        return n_head_kv
    return None


def numpy_shape(ggml_shape) -> tuple[int, ...]:
    """GGUF lists dimensions fastest-varying first; numpy wants them slowest first."""
    return tuple(int(d) for d in reversed(list(ggml_shape)))


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py), HF layout -> GGUF layout.

    Only the tests need it: it proves `unpermute_qk` is its exact inverse.
    """
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def unpermute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of `permute_qk`: GGUF's interleaved rotary rows back to HF's split halves."""
    rows = weights.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows cannot be split into {n_head} heads of rotary pairs")
    return (
        weights.reshape(n_head, rows // n_head // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )
