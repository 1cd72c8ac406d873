"""The cblas shim over scipy-openblas32: it builds, routes one-row products to GEMV, and
computes what numpy computes, whatever the transposes, strides and beta."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving import backend
from serving.blas_shim import EXPORTS, LIB_NAME, ShimUnavailable, _build, ensure_shim, find_compiler

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the shim is for Linux CPU")

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
ROUTE_GEMM, ROUTE_ROW, ROUTE_COLUMN = 0, 1, 2


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    if find_compiler() is None:
        pytest.skip("no C compiler here")
    try:
        return ensure_shim(tmp_path_factory.mktemp("cache"))
    except ShimUnavailable as exc:
        if "not installed" in str(exc):
            pytest.skip(str(exc))
        raise  # a compiler and the wheel are here: the build must work


@pytest.fixture(scope="module")
def lib(shim):
    handle = ctypes.CDLL(str(shim.path))
    for name, real in (("cblas_sgemm", ctypes.c_float), ("cblas_dgemm", ctypes.c_double)):
        fn = getattr(handle, name)
        p, i = ctypes.c_void_p, ctypes.c_int
        fn.argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
        fn.restype = None
    handle.mlxproof_shim_last_route.restype = ctypes.c_int
    return handle


def _gemm(lib, dtype, a_op, b_op, *, ta, tb, alpha, beta, c, pad=0):
    """C = alpha op(A) op(B) + beta C through the shim, row-major, A and B stored as their
    transposes when ta/tb say so, every leading dimension `pad` wider than it must be."""
    m, k = a_op.shape
    n = b_op.shape[1]

    def stored(op, trans):
        x = op.T if trans else op
        buf = np.full((x.shape[0], x.shape[1] + pad), np.nan, dtype=dtype)  # padding must never be read
        buf[:, :x.shape[1]] = x
        return buf

    a, b = stored(a_op, ta == TRANS), stored(b_op, tb == TRANS)
    cbuf = np.full((m, n + pad), -7.0, dtype=dtype)
    cbuf[:, :n] = c
    fn = lib.cblas_sgemm if dtype == np.float32 else lib.cblas_dgemm
    fn(ROW_MAJOR, ta, tb, m, n, k, alpha, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1],
       beta, cbuf.ctypes.data, cbuf.shape[1])
    assert np.all(cbuf[:, n:] == -7.0), "wrote outside C"
    return cbuf[:, :n], lib.mlxproof_shim_last_route()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [NO_TRANS, TRANS])
@pytest.mark.parametrize("tb", [NO_TRANS, TRANS])
@pytest.mark.parametrize("shape,route", [((1, 37, 53), ROUTE_ROW), ((29, 37, 1), ROUTE_COLUMN),
                                         ((7, 37, 53), ROUTE_GEMM), ((1, 37, 1), ROUTE_GEMM)])
@pytest.mark.parametrize("pad", [0, 3])
def test_matches_numpy(lib, dtype, ta, tb, shape, route, pad):
    rng = np.random.default_rng(hash((ta, tb, shape, pad)) % 2**32)
    m, k, n = shape
    a, b, c = (rng.standard_normal(s).astype(dtype) for s in ((m, k), (k, n), (m, n)))
    got, took = _gemm(lib, dtype, a, b, ta=ta, tb=tb, alpha=1.5, beta=0.5, c=c, pad=pad)
    want = 1.5 * (a.astype(np.float64) @ b) + 0.5 * c
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)
    assert took == route


@pytest.mark.parametrize("shape", [(1, 64, 96), (96, 64, 1)])
def test_beta_zero_never_reads_c(lib, shape):
    # MLX hands BLAS an uninitialised output with beta = 0; a NaN there must not come through.
    rng = np.random.default_rng(1)
    m, k, n = shape
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    got, took = _gemm(lib, np.float32, a, b, ta=NO_TRANS, tb=NO_TRANS, alpha=1.0, beta=0.0,
                      c=np.full((m, n), np.nan, dtype=np.float32))
    assert took in (ROUTE_ROW, ROUTE_COLUMN)
    np.testing.assert_allclose(got, a @ b, rtol=1e-4, atol=1e-4)


def test_exports_what_mlx_imports(shim):
    out = subprocess.run(["nm", "-D", "--defined-only", str(shim.path)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("nm is not available")
    defined = {line.split()[-1] for line in out.stdout.splitlines()}
    assert set(EXPORTS) <= defined


def test_cached_by_version(shim):
    assert shim.path.name == LIB_NAME and f"scipy-openblas32-{shim.openblas_version}-" in shim.path.parent.name
    assert ensure_shim(shim.path.parents[2]).path == shim.path  # found, not rebuilt elsewhere


def test_no_compiler_is_a_clear_refusal(shim, tmp_path):
    with pytest.raises(ShimUnavailable, match="no C compiler"):
        _build(tmp_path / LIB_NAME, shim.openblas_lib, compiler=None)


def test_mlx_through_the_shim(shim):
    """MLX preloaded with the shim: matmuls equal numpy's, and the process names the shim it loaded."""
    probe = r"""
import json, numpy as np, mlx.core as mx
from serving.backend import loaded_blas, preloaded_blas
rng = np.random.default_rng(0)
worst = 0.0
for m, k, n in [(1, 576, 1536), (10, 576, 1536), (1, 576, 4000), (64, 64, 64)]:
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    for got in (mx.array(a) @ mx.array(b), mx.array(a) @ mx.array(np.ascontiguousarray(b.T)).T):
        worst = max(worst, float(np.abs(np.array(got) - a.astype(np.float64) @ b).max()))
print(json.dumps({"worst": worst, "blas": loaded_blas(), "preload": preloaded_blas()}))
"""
    env = {**os.environ, "LD_PRELOAD": str(shim.path), backend.REEXEC_MARKER: "test"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["worst"] < 1e-3
    assert out["blas"].startswith("openblas-shim (OpenBLAS ") and str(shim.path) in out["blas"]
    assert out["preload"] == str(shim.path)
