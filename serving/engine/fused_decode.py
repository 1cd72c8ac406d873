"""One decode token through llama-style layers, with the projections that read the same input fused.

On a GPU a small model's decode step is launch-bound: every projection is its own kernel, and
q, k and v (and the MLP's gate and up) each read the same normalised hidden state. Here each
layer runs one matmul for q|k|v and one for gate|up, over weights concatenated once at startup,
then splits the result; everything else is the model's own code (its RoPE, mlx-lm's attention,
its norms and head). Each output element is the same dot product as before, so the numbers are
the model's own. Used by `--decode-step compiled` and the lean batch step (engine.lean_step) for
the model types whose layer structure is known (Llama, SmolLM2, Qwen2); any other model, or
quantized weights, decodes through the model's own forward. The model's own q, k, v, gate and up
weights become views into the concatenated ones, so the fused copy costs no memory and prefill
reads the same numbers.

On a CPU a batched step is also hundreds of small ops, each built in Python and dispatched to
MLX's stream thread, and the graph-building thread shares the second core with the BLAS worker.
So the decoder keeps a step's graph small without changing a number: every weight is transposed
once, at build; one token a row runs as rows x hidden (no product folds and unfolds a middle
axis); and RoPE's cosines and sines are made once per step (Rotation) instead of by every layer's
rope for q and for k. A 10-row step of SmolLM2-135M went from 4,023 graph nodes to 2,379.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
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
    # The weights as x @ w.T reads them, transposed once (views of the same buffers), so a step's
    # graph holds no transpose per product.
    qkv_t: mx.array
    o_t: mx.array
    gate_up_t: mx.array
    down_t: mx.array


def transposed(weight: mx.array) -> mx.array:
    view = weight.T
    mx.eval(view)
    return view


def _linear(x: mx.array, weight_t: mx.array, bias: mx.array | None) -> mx.array:
    """x @ weight.T, given weight.T, as nn.Linear computes it."""
    return x @ weight_t if bias is None else mx.addmm(bias, x, weight_t)


@partial(mx.compile, shapeless=True)
def _shifted_exp(x: mx.array, shift: mx.array) -> mx.array:
    return mx.exp(x - shift)


def softmax_last_axis(x: mx.array) -> mx.array:
    """mx.softmax(x, axis=-1) on a CPU in float32, number for number, with the exponentials in one
    compiled kernel: MLX's softmax computes each exp through a libm call per multiply-add, and a
    compiled kernel can inline them (serving/cpu_jit.py). The same steps as MLX's CPU softmax:
    the row's max, exp(x - max), their sum in order, and each exp times the sum's reciprocal."""
    e = _shifted_exp(x, mx.max(x, axis=-1, keepdims=True))
    return e * (1 / mx.sum(e, axis=-1, keepdims=True))


def grouped_attention(q: mx.array, k: mx.array, v: mx.array, *, scale: float, mask) -> mx.array:
    """One query token per row, its query heads grouped by KV head: MLX's own attention on a CPU
    (mx.fast.scaled_dot_product_attention's composite of products, mask and softmax), with each
    KV head's query heads as the rows of one product instead of one product each.

    MLX's CPU matmul calls the BLAS once per batch element, and its attention makes every query
    head a batch element: rows x query heads one-row products per layer for the scores and as many
    for the values (17,280 calls a step at 32 rows of SmolLM2-135M; README, "Step profile"). Here
    it is rows x KV heads. Each number is the same: the BLAS shim sums every element of a few-row
    product alike whatever the row count (small_m.c for the scores, small_m_nn.c for the values),
    and the scale, the mask's fill and the softmax (softmax_last_axis) are MLX's own.
    q: rows x heads x 1 x d; k, v: rows x kv heads x length x d; returns q's shape."""
    rows, heads, _, d = q.shape
    kv_heads, length = k.shape[1], k.shape[2]
    q = (mx.array(scale, q.dtype) * q).reshape(rows, kv_heads, heads // kv_heads, d)
    scores = q @ k.swapaxes(-1, -2)  # rows x kv heads x group x length
    if isinstance(mask, mx.array):
        # The mask speaks of query heads (rows x heads-or-1 x 1 x length); here they are grouped.
        mask = mx.broadcast_to(mask, (rows, heads, 1, length)).reshape(rows, kv_heads, heads // kv_heads, length)
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.array(mx.finfo(scores.dtype).min, scores.dtype))
        else:
            scores = scores + mask.astype(scores.dtype)
    # A causal mask (or none) hides nothing from the one newest query token.
    return (softmax_last_axis(scores) @ v).reshape(rows, heads, 1, d)


@dataclass(frozen=True)
class Rotation:
    """RoPE's cosines and sines for one step's rows x n tokens, spread over the query heads and
    over the KV heads, made once per step for every layer (every layer's cache holds the rows at
    the same positions)."""

    q: tuple[mx.array, mx.array]  # cos, sin: rows x heads x n x d/2
    k: tuple[mx.array, mx.array]  # rows x kv heads x n x d/2

    @classmethod
    def of(cls, rope: Any, offset: Any, *, rows: int, n: int, heads: int, kv_heads: int,
           dtype: mx.Dtype) -> "Rotation":
        """As the rope computes them: the rope of a unit vector (ones in the first half, zeros in
        the second) is exactly its cos | sin (1 * cos - 0 * sin is cos, 1 * sin + 0 * cos is sin)."""
        half = rope.dims // 2
        unit = mx.concatenate([mx.ones((rows, 1, n, half), dtype), mx.zeros((rows, 1, n, half), dtype)], axis=-1)
        table = rope(unit, offset=offset)
        cos, sin = table[..., :half], table[..., half:]
        # Spread once, so no layer's products broadcast them again (a view: nothing is copied).
        return cls(*(tuple(mx.broadcast_to(t, (rows, h, n, half)) for t in (cos, sin)) for h in (heads, kv_heads)))


def rotate(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """RoPE (not traditional, every dimension rotated) of x (rows x heads x n x d): the products,
    difference and sum MLX's own rope computes on a CPU, in its order, from the same cosines and
    sines, so the same numbers. What it saves is rebuilding the table (positions, frequencies,
    cos, sin: about twenty ops) for q and k in every layer: a quarter of a 10-row step's ops."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return mx.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def shares_rotation(rope: Any, head_dim: int) -> bool:
    """Whether a layer's rope can take a step's one Rotation: MLX's nn.RoPE, rotating whole
    heads in halves, on a CPU, where mx.fast.rope runs the composite `rotate` repeats (a GPU's
    kernel computes each angle itself)."""
    return (type(rope) is nn.RoPE and not rope.traditional and rope.dims == head_dim
            and mx.default_device() == mx.cpu)


def _per_token_linear(x: mx.array, weight: mx.array, bias: None = None) -> mx.array:
    """x @ weight.T for rows x n x k, as n separate one-row products: weight @ x_i for each token,
    one batch element each (the weight broadcast, not copied), which MLX's CUDA backend runs as a
    batched matrix-vector kernel summing each output like the one-row product of a one-token step.
    One (rows*n) x k product would be a GEMM, summing in another order. (No bias: the decoder
    takes this form only for unbiased models.)"""
    assert bias is None, "the per-token form takes no bias"
    rows, n, k = x.shape
    return (weight @ x.reshape(rows * n, k, 1)).reshape(rows, n, -1)


@dataclass(frozen=True)
class _TokenRows:
    """A verifying forward's rows x n tokens laid out one token per row, as a one-token step lays
    out one; the same for every layer, so made once per forward."""
    at: mx.array  # (rows*n,): each token's position, for RoPE
    mask: mx.array  # rows x heads*n x 1 x length: each token's query heads masked at its position

    @classmethod
    def of(cls, positions: mx.array, mask: mx.array, heads: int) -> "_TokenRows":
        """positions: each row's first position; mask: rows x 1 x n x length."""
        rows, _, n, length = mask.shape
        at = (positions[:, None] + mx.arange(n)).reshape(-1)
        return cls(at, mx.broadcast_to(mask, (rows, heads, n, length)).reshape(rows, heads * n, 1, length))


def _per_token_attention(attn: Any, cache: Any, q: mx.array, k: mx.array, v: mx.array, layout: _TokenRows):
    """Attention for rows x n new tokens laid out as the one-token step lays out one: each token its
    own RoPE row at its own position, and its own query heads (rows x heads*n x 1 x d, grouped under
    their KV heads as before), with the mask spread to match (_TokenRows). A masked key adds an
    exact zero, so the n tokens' KV written past a query's position changes nothing.
    q, k, v: rows x n x (heads*d) from the projection; returns rows x n x (heads*d)."""
    from mlx_lm.models.base import scaled_dot_product_attention

    rows, n = q.shape[:2]
    heads, kv_heads = attn.n_heads, attn.n_kv_heads
    at = layout.at

    def rope_rows(x, h):  # (rows*n) x h x 1 x d, one token per row
        return attn.rope(x.reshape(rows * n, 1, h, -1).transpose(0, 2, 1, 3), offset=at)

    q, k = rope_rows(q, heads), rope_rows(k, kv_heads)
    d = q.shape[-1]
    k = k.reshape(rows, n, kv_heads, d).transpose(0, 2, 1, 3)
    v = v.reshape(rows, n, kv_heads, d).transpose(0, 2, 1, 3)
    keys, values = cache.update_and_fetch(k, v)
    q = q.reshape(rows, n, heads, d).transpose(0, 2, 1, 3).reshape(rows, heads * n, 1, d)
    out = scaled_dot_product_attention(q, keys, values, cache=cache, scale=attn.scale, mask=layout.mask)
    return out.reshape(rows, heads, n, d).transpose(0, 2, 1, 3).reshape(rows, n, heads * d)


def sums_differ_by_row_count() -> bool:
    """Whether this device's products sum a row differently with more rows beside it: on CUDA a
    one-row product is a matrix-vector kernel and a several-row one a cuBLAS GEMM. The CPU's BLAS
    shim sums a few-row product's elements alike whatever the count (small_m.c), and mx.fast's
    Metal kernels are not measured here, so only CUDA takes the per-token forms."""
    cuda = getattr(mx, "cuda", None)
    return mx.default_device() == mx.gpu and cuda is not None and cuda.is_available()


class FusedDecoder:
    def __init__(self, model: Any, layers: list[_Layer], *, grouped: bool = False,
                 per_token: bool = False, head_t: mx.array | None = None) -> None:
        self._model = model
        self._layers = layers
        self._head_t = head_t  # a plain head's weight, transposed once (None: the model's own head)
        # On a CPU, in float32, through the BLAS shim's kernels, attention runs as grouped_attention
        # (any other BLAS may sum a grouped product otherwise); on a GPU mx.fast's fused kernel
        # already takes every head at once.
        self._grouped = grouped
        # A lookup step's forward of n tokens per row sums each token as the one-token step does
        # (per-token products and attention rows), so its greedy tokens are the one-token step's.
        self.per_token = per_token
        self._shared_rotation = bool(layers) and all(
            shares_rotation(l.block.self_attn.rope, l.splits[0] // l.block.self_attn.n_heads) for l in layers)

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
            layers.append(_Layer(block, qkv, bias, (n_q, n_q + n_k), gate_up, gate.weight.shape[0],
                                 transposed(qkv), transposed(projections[3].weight), transposed(gate_up),
                                 transposed(projections[6].weight)))
        from ..blas_shim import kernels_in_process

        grouped = mx.default_device() == mx.cpu and layers[0].qkv.dtype == mx.float32 and kernels_in_process()
        # The per-token forms take plain weights without biases: a bias goes through cuBLAS's
        # epilogue in the one-token step, which no per-token form repeats.
        head = getattr(model, "lm_head", None)
        plain_head = (type(inner.embed_tokens) is nn.Embedding if head is None
                      else type(head) is nn.Linear and "bias" not in head)
        unbiased = plain_head and all(l.qkv_bias is None and "bias" not in l.block.self_attn.o_proj
                                      and "bias" not in l.block.mlp.down_proj for l in layers)
        head_t = transposed(inner.embed_tokens.weight if head is None else head.weight) if plain_head else None
        return cls(model, layers, grouped=grouped, per_token=unbiased and sums_differ_by_row_count(), head_t=head_t)

    def weights(self) -> list[mx.array]:
        """The fused weights this decoder made (the model's own are row slices of them)."""
        return [w for layer in self._layers for w in (layer.qkv, layer.gate_up)]

    def __call__(self, tokens: mx.array, caches: list, mask: mx.array | None = None) -> mx.array:
        """Logits (rows x vocab) for one token per row, or (rows x n x vocab) for rows x n tokens (a
        lookup step's verifying forward); caches as the model's own forward takes them, and the mask
        the model would make from them where none is given."""
        from mlx_lm.models.activations import swiglu
        from mlx_lm.models.base import create_attention_mask

        inner = self._model.model
        several = tokens.ndim == 2
        h = inner.embed_tokens(tokens if several else tokens[:, None])
        if mask is None:
            mask = create_attention_mask(h, caches[0])
        rows, n = h.shape[:2]
        if not several:  # one token a row: rows x hidden, so no product folds and unfolds a middle axis
            h = h.reshape(rows, -1)
        per_token = self.per_token and n > 1

        def project(x, weight: mx.array, weight_t: mx.array, bias: mx.array | None) -> mx.array:
            return _per_token_linear(x, weight, bias) if per_token else _linear(x, weight_t, bias)

        if per_token:  # every layer's cache holds the rows at the same positions
            layout = _TokenRows.of(caches[0].offset, mask, self._layers[0].block.self_attn.n_heads)
        rotation = None
        if self._shared_rotation and not per_token:
            first = self._layers[0].block.self_attn
            rotation = Rotation.of(first.rope, caches[0].offset, rows=rows, n=n, heads=first.n_heads,
                                   kv_heads=first.n_kv_heads, dtype=h.dtype)
        for layer, cache in zip(self._layers, caches):
            block, attn, mlp = layer.block, layer.block.self_attn, layer.block.mlp
            qkv = project(block.input_layernorm(h), layer.qkv, layer.qkv_t, layer.qkv_bias)
            q, k, v = mx.split(qkv, layer.splits, axis=-1)
            if per_token:
                out = _per_token_attention(attn, cache, q, k, v, layout)
            else:
                out = self._attention(attn, cache, q, k, v, mask, rotation, n=n)
            h = h + project(out, attn.o_proj.weight, layer.o_t, _bias(attn.o_proj))
            gate_up = project(block.post_attention_layernorm(h), layer.gate_up, layer.gate_up_t, None)
            gate, up = mx.split(gate_up, [layer.hidden], axis=-1)
            h = h + project(swiglu(gate, up), mlp.down_proj.weight, layer.down_t, _bias(mlp.down_proj))
        h = inner.norm(h)
        head = getattr(self._model, "lm_head", None)
        if self._head_t is not None:  # a plain head (build checks): the embedding's weight where tied
            logits = project(h, inner.embed_tokens.weight if head is None else head.weight, self._head_t, None)
        else:  # the per-token form needs a plain head, so this is the one-token step's own
            logits = head(h) if head is not None else inner.embed_tokens.as_linear(h)
        return logits

    def _attention(self, attn: Any, cache: Any, q: mx.array, k: mx.array, v: mx.array, mask,
                   rotation: Rotation | None = None, *, n: int) -> mx.array:
        """The model's attention for rows x n tokens (q, k, v as projected: rows x n x (heads*d), or
        rows x (heads*d) for one token a row), out in q's shape; RoPE from the step's Rotation where
        there is one."""
        from mlx_lm.models.base import scaled_dot_product_attention

        rows, lead = q.shape[0], q.shape[:-1]
        q = q.reshape(rows, n, attn.n_heads, -1).transpose(0, 2, 1, 3)
        k = k.reshape(rows, n, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = v.reshape(rows, n, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
        if rotation is not None:
            q, k = rotate(q, *rotation.q), rotate(k, *rotation.k)
        else:
            q = attn.rope(q, offset=cache.offset)
            k = attn.rope(k, offset=cache.offset)
        k, v = cache.update_and_fetch(k, v)
        if self._grouped and n == 1 and not isinstance(k, tuple):  # (a quantized cache hands back tuples)
            out = grouped_attention(q, k, v, scale=attn.scale, mask=mask)
        else:
            out = scaled_dot_product_attention(q, k, v, cache=cache, scale=attn.scale, mask=mask)
        return out.transpose(0, 2, 1, 3).reshape(*lead, -1)


def _bias(linear: Any) -> mx.array | None:
    return linear["bias"] if "bias" in linear else None
