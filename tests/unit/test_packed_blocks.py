"""Packed weights (serving/blas_shim/packed_blocks.c): a float32 weight that is exactly GGUF Q4_1 or
Q8_0 blocks is packed, one that is not is left alone, and every product through a packed weight is
the product through the float32 weight, bit for bit."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.unit.test_blas_shim import SMALL_M_KERNEL_HERE

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the shim is for Linux CPU"),
              pytest.mark.skipif(not SMALL_M_KERNEL_HERE, reason="the few-row kernel needs x86-64 AVX2 + FMA")]

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
ROUTE_SMALL_M, ROUTE_PACKED = 3, 5

# The shim knows a packed weight by its address for the process's life, as the server keeps its
# model's arrays: a freed test array's address could come back as another array.
KEPT: list[np.ndarray] = []


def q4_1(n: int, k: int, seed: int) -> np.ndarray:
    """What gguf-py's Q4_1 dequantisation makes: float16 scale and minimum per 32, (d * q) + m in float32."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 16, size=(n, k // 32, 32)).astype(np.float32)
    q[:, :, 0], q[:, :, 1] = 0, 15  # as quantising sets them: the minimum at 0, the maximum at 15
    d = (rng.random((n, k // 32, 1)) * 0.02 + 1e-4).astype(np.float16).astype(np.float32)
    m = (rng.standard_normal((n, k // 32, 1)) * 0.05).astype(np.float16).astype(np.float32)
    return ((d * q) + m).reshape(n, k)


def q8_0(n: int, k: int, seed: int) -> np.ndarray:
    """gguf-py's Q8_0: float16 scale per 32, int8 q, d * q in float32."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-127, 128, size=(n, k // 32, 32)).astype(np.float32)
    q[:, :, 0] = 127
    d = (rng.random((n, k // 32, 1)) * 0.01 + 1e-4).astype(np.float16).astype(np.float32)
    return (q * d).reshape(n, k)


def product(lib, a: np.ndarray, w: np.ndarray, *, alpha=1.0, beta=0.0, c=None, rows=None) -> tuple[np.ndarray, int]:
    """a @ w[rows].T through the shim, w read where it lies (no copy: its address is what counts)."""
    lo, hi = rows or (0, w.shape[0])
    m, k = a.shape
    out = np.zeros((m, hi - lo), np.float32) if c is None else c.copy()
    lib.cblas_sgemm(ROW_MAJOR, NO_TRANS, TRANS, m, hi - lo, k, alpha, a.ctypes.data, k,
                    w.ctypes.data + lo * w.strides[0], w.shape[1], beta, out.ctypes.data, hi - lo)
    return out, lib.mlxproof_shim_last_route()


def pack(lib, w: np.ndarray) -> int:
    KEPT.append(w)
    return lib.mlxproof_pack_exact(w.ctypes.data, w.shape[0], w.shape[1], w.shape[1])


@pytest.mark.parametrize("make, bits", [(q4_1, 4), (q8_0, 8)])
@pytest.mark.parametrize("n, k", [(7, 64), (1536, 576), (576, 1536)])
def test_exact_blocks_are_packed_and_multiply_to_the_same_bits(lib, make, bits, n, k):
    w = make(n, k, seed=n + k)
    rng = np.random.default_rng(k)
    inputs = {m: rng.standard_normal((m, k), dtype=np.float32) for m in (1, 3, 10, 32)}
    before = {m: product(lib, a, w) for m, a in inputs.items()}
    assert all(route == ROUTE_SMALL_M for _, route in before.values())
    assert pack(lib, w) == bits
    for m, a in inputs.items():
        got, route = product(lib, a, w)
        assert route == ROUTE_PACKED
        assert np.array_equal(got.view(np.uint32), before[m][0].view(np.uint32)), f"{m} rows changed"
    c = rng.standard_normal((10, n), dtype=np.float32)  # beta != 0: a bias, as addmm gives it
    assert pack(lib, w) == bits  # packing again finds it
    got, _ = product(lib, inputs[10], w, alpha=0.5, beta=1.0, c=c)
    np.testing.assert_allclose(got, 0.5 * (inputs[10].astype(np.float64) @ w.T) + c, rtol=1e-4, atol=1e-4)


def test_rows_of_a_packed_weight_are_read_packed(lib):
    """A fused weight is packed; the model's own weights are row slices of it, and a product over
    a slice reads the slice's packed rows."""
    fused = q4_1(96 + 32 + 32, 128, seed=5)
    a = np.random.default_rng(1).standard_normal((4, 128), dtype=np.float32)
    before = product(lib, a, fused, rows=(96, 128))[0]
    assert pack(lib, fused) == 4
    assert lib.mlxproof_pack_exact(fused.ctypes.data + 96 * fused.strides[0], 32, 128, 128) == 4  # inside it
    got, route = product(lib, a, fused, rows=(96, 128))
    assert route == ROUTE_PACKED
    assert np.array_equal(got, before)


def test_a_weight_that_is_not_exact_stays_float32(lib):
    rng = np.random.default_rng(2)
    plain = rng.standard_normal((64, 256), dtype=np.float32)
    assert pack(lib, plain) == 0
    assert product(lib, rng.standard_normal((2, 256), dtype=np.float32), plain)[1] == ROUTE_SMALL_M


def test_one_float_off_is_enough_to_refuse(lib):
    """The proof is the whole weight, unpacked and compared: one value a bit away from its block
    keeps the weight as it is."""
    w = q4_1(32, 256, seed=3)
    w[17, 200] = np.nextafter(w[17, 200], np.float32(1))
    assert pack(lib, w) == 0
    assert product(lib, np.ones((1, 256), np.float32), w)[1] == ROUTE_SMALL_M


@pytest.mark.parametrize("n, k", [(4, 33), (4, 16), (0, 64)])
def test_shapes_it_cannot_pack_are_refused(lib, n, k):
    w = np.zeros((max(n, 1), k), np.float32)
    KEPT.append(w)
    assert lib.mlxproof_pack_exact(w.ctypes.data, n, k, k) == -1


def test_a_constant_block_packs(lib):
    w = np.full((3, 64), 0.25, np.float32)
    w[1] = 0.0
    before = product(lib, np.ones((2, 64), np.float32), w)[0]
    assert pack(lib, w) in (4, 8)
    got, route = product(lib, np.ones((2, 64), np.float32), w)
    assert route == ROUTE_PACKED and np.array_equal(got, before)


def test_packed_bytes_are_counted(lib):
    start = lib.mlxproof_packed_bytes()
    assert pack(lib, q8_0(64, 64, seed=11)) == 8
    assert lib.mlxproof_packed_bytes() - start == 64 * 2 * (32 + 4)  # 2 blocks a row: 32 codes, a scale
