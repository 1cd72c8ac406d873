"""One decode token through llama-style layers, with the projections that read the same input fused.

On a GPU a small model's decode step is launch-bound: every projection is its own kernel, and
q, k and v (and the MLP's gate and up) each read the same normalised hidden state. Here each
layer runs one matmul for q|k|v and one for gate|up, over weights concatenated once at startup,
then splits the result; everything else is the model's own code (its RoPE, mlx-lm's attention,
its norms and head). Each output element is the same dot product as before, so the numbers are
the model's own. Used by `--decode-step compiled` for the model types whose layer structure is
known (Llama, SmolLM2, Qwen2); any other model, or quantized weights, decodes through the model's
own forward. The model's own q, k, v, gate and up weights become views into the concatenated
ones, so the fused copy costs no memory and prefill reads the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

FUSABLE_TYPES = ("llama", "qwen2")


@dataclass(frozen=True)
class _Layer:
    block: Any
    qkv: mx.array
    qkv_bias: mx.array | None
    splits: tuple[int, int]  # where k and v start in the fused output
    gate_up: mx.array
    hidden: int


def _linear(x: mx.array, weight: mx.array, bias: mx.array | None) -> mx.array:
    return x @ weight.T if bias is None else mx.addmm(bias, x, weight.T)  # as nn.Linear computes


class FusedDecoder:
    def __init__(self, model: Any, layers: list[_Layer]) -> None:
        self._model = model
        self._layers = layers

    @classmethod
    def build(cls, model: Any) -> "FusedDecoder | None":
        """The fused decoder, or None where this model's layers are not the known plain kind."""
        args = getattr(model, "args", None)
        inner = getattr(model, "model", None)
        if getattr(args, "model_type", None) not in FUSABLE_TYPES or inner is None:
            return None
        if getattr(inner, "swa_idx", None) is not None:
            return None  # sliding-window layers take another mask
        layers = []
        for block in inner.layers:
            attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
            projections = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
            projections += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
            if any(type(p) is not nn.Linear for p in projections) or getattr(mlp, "gate_proj", None) is None:
                return None  # quantized or unusual: the model's own forward
            q, k, v = projections[:3]
            gate, up = projections[4:6]
            if "bias" in gate or "bias" in up or ("bias" in q) != ("bias" in k) or ("bias" in q) != ("bias" in v):
                return None
            qkv = mx.concatenate([q.weight, k.weight, v.weight], axis=0)
            bias = mx.concatenate([q.bias, k.bias, v.bias]) if "bias" in q else None
            n_q, n_k = q.weight.shape[0], k.weight.shape[0]
            gate_up = mx.concatenate([gate.weight, up.weight], axis=0)
            mx.eval(qkv, gate_up)
            # Row slices of a row-major array share its buffer: the originals are freed.
            q.weight, k.weight, v.weight = qkv[:n_q], qkv[n_q:n_q + n_k], qkv[n_q + n_k:]
            gate.weight, up.weight = gate_up[:gate.weight.shape[0]], gate_up[gate.weight.shape[0]:]
            mx.eval(q.weight, k.weight, v.weight, gate.weight, up.weight)
            layers.append(_Layer(block, qkv, bias, (n_q, n_q + n_k), gate_up, gate.weight.shape[0]))
        return cls(model, layers)

    def __call__(self, tokens: mx.array, caches: list, mask: mx.array | None = None) -> mx.array:
        """Logits (rows x vocab) for one token per row; caches as the model's own forward takes them,
        and the mask the model would make from them where none is given."""
        from mlx_lm.models.activations import swiglu
        from mlx_lm.models.base import create_attention_mask, scaled_dot_product_attention

        inner = self._model.model
        h = inner.embed_tokens(tokens[:, None])
        if mask is None:
            mask = create_attention_mask(h, caches[0])
        rows = tokens.shape[0]
        for layer, cache in zip(self._layers, caches):
            block, attn = layer.block, layer.block.self_attn
            x = block.input_layernorm(h)
            fused = _linear(x, layer.qkv, layer.qkv_bias)
            q, k, v = mx.split(fused, layer.splits, axis=-1)
            q = q.reshape(rows, 1, attn.n_heads, -1).transpose(0, 2, 1, 3)
            k = k.reshape(rows, 1, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
            v = v.reshape(rows, 1, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
            q = attn.rope(q, offset=cache.offset)
            k = attn.rope(k, offset=cache.offset)
            k, v = cache.update_and_fetch(k, v)
            out = scaled_dot_product_attention(q, k, v, cache=cache, scale=attn.scale, mask=mask)
            h = h + attn.o_proj(out.transpose(0, 2, 1, 3).reshape(rows, 1, -1))
            gate, up = mx.split(block.post_attention_layernorm(h) @ layer.gate_up.T, [layer.hidden], axis=-1)
            h = h + block.mlp.down_proj(swiglu(gate, up))
        h = inner.norm(h)
        head = getattr(self._model, "lm_head", None)
        logits = head(h) if head is not None else inner.embed_tokens.as_linear(h)
        return logits[:, -1, :]
