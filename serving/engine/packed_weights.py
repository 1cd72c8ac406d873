"""Give the CPU kernel the weights it can read as exact GGUF blocks (serving/blas_shim/packed_blocks.c).

A model converted from a GGUF holds float32 weights that are, bit for bit, what its blocks of 32
dequantise to: scale * q + offset (Q4_1, the default model's layers) or scale * q (Q8_0, its
embedding and head). The shim keeps such a weight as its blocks too (0.75 or 1.125 bytes a weight
against 4), and its few-row kernel unpacks a tile's rows to the same floats in cache before
multiplying, so a decode step reads a fraction of the bytes and every product is what it was. The
shim packs only a weight whose unpacked form it has checked against every float; anything else
stays as it is.

Prefill's many-row products still read the float32 weights through GEMM, so those stay; the
packed copies are extra memory (`/health`: engine.packed_weights.bytes).
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

log = logging.getLogger("mlx_proof.engine")

BLOCK = 32  # weights per block along k, as in GGUF's Q4_1 and Q8_0


@dataclass(frozen=True)
class PackedWeights:
    policy: str  # auto | off
    packed: int = 0  # weights the kernel now reads as blocks
    examined: int = 0  # float32 matrices offered
    bytes: int = 0  # what the packed copies hold
    seconds: float = 0.0
    note: str | None = None  # why nothing was packed, where it was not tried
    # The packed arrays themselves: the shim knows them by address, so they must outlive it.
    arrays: tuple = field(default=(), repr=False)

    def as_dict(self) -> dict:
        return {"policy": self.policy, "packed": self.packed, "examined": self.examined, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "note": self.note}


def _shim_entry() -> Any | None:
    try:
        pack = ctypes.CDLL(None).mlxproof_pack_exact
    except (AttributeError, OSError):
        return None
    pack.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    pack.restype = ctypes.c_int
    return pack


def _packed_bytes() -> int:
    entry = ctypes.CDLL(None).mlxproof_packed_bytes
    entry.restype = ctypes.c_long
    return int(entry())


def weight_matrices(model: Any, extra: Iterable[Any] = ()) -> list[Any]:
    """The model's float32 matrices a product could take as its weight, largest first (so a
    fused weight comes before its row slices, which the shim then finds inside it)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    arrays = [*extra, *(value for _, value in tree_flatten(model.parameters()))]
    matrices = [a for a in arrays if isinstance(a, mx.array) and a.ndim == 2 and a.dtype == mx.float32
                and a.shape[1] % BLOCK == 0]
    return sorted(matrices, key=lambda a: a.size, reverse=True)


def fused_weights(generator: Any) -> list[Any]:
    """The weights a generator's decode step made from the model's (engine.fused_decode), which the
    model's parameters hold only as row slices."""
    decoders = (getattr(getattr(generator, "_generation_batch", None), "fused", None),
                getattr(generator, "_fused", None))
    return [weight for decoder in decoders if decoder is not None for weight in decoder.weights()]


def pack_exact_weights(model: Any, *, policy: str, extra: Iterable[Any] = ()) -> PackedWeights:
    """Offer every float32 matrix of `model` (and `extra`: weights a decode step made from it, such
    as fused projections) to the shim; it packs those that are exact blocks."""
    import numpy as np

    if policy == "off":
        return PackedWeights(policy, note="--packed-weights off")
    pack = _shim_entry()
    if pack is None:
        return PackedWeights(policy, note="no cblas shim with packing in this process (not the Linux CPU shim)")
    started = time.perf_counter()
    kept, examined = [], 0
    for matrix in weight_matrices(model, extra):
        view = np.array(matrix, copy=False)  # the array's own buffer: its address is what MLX hands the BLAS
        if not view.flags["C_CONTIGUOUS"]:
            continue
        examined += 1
        n, k = view.shape
        if pack(view.ctypes.data, n, k, k) > 0:
            kept.append(matrix)
    result = PackedWeights(policy, packed=len(kept), examined=examined, bytes=_packed_bytes(),
                           seconds=time.perf_counter() - started, arrays=tuple(kept))
    log.info("packed weights: %d of %d float32 matrices are exact GGUF blocks (%.0f MB packed, %.2f s)",
             result.packed, result.examined, result.bytes / 1e6, result.seconds)
    return result
