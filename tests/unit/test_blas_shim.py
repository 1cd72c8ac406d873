"""The cblas shim over scipy-openblas32: it builds, routes one-row products to GEMV and few-row
products against a transposed weight, or against a narrow untransposed one, to its own kernels,
and computes what numpy computes, whatever the transposes, strides and beta."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from serving import backend
from serving.blas_shim import EXPORTS, LIB_NAME, ShimUnavailable, _build, ensure_shim

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the shim is for Linux CPU")

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
ROUTE_GEMM, ROUTE_ROW, ROUTE_COLUMN, ROUTE_SMALL_M, ROUTE_SMALL_NN = 0, 1, 2, 3, 4
SMALL_M_MAX = 32  # small_m.c, small_m_nn.c
NN_MAX_N = 256  # small_m_nn.c


def _small_m_kernel_here() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return os.uname().machine == "x86_64" and " avx2" in flags and " fma" in flags


SMALL_M_KERNEL_HERE = _small_m_kernel_here()


def _expected_route(dtype, ta, tb, m, n) -> int:
    if dtype == np.float32 and ta == NO_TRANS and tb == TRANS and m <= SMALL_M_MAX and SMALL_M_KERNEL_HERE:
        return ROUTE_SMALL_M
    if (dtype == np.float32 and ta == NO_TRANS and tb == NO_TRANS and m <= SMALL_M_MAX and n <= NN_MAX_N
            and SMALL_M_KERNEL_HERE):
        return ROUTE_SMALL_NN
    if m == 1 and n > 1:
        return ROUTE_ROW
    if n == 1 and m > 1:
        return ROUTE_COLUMN
    return ROUTE_GEMM


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
@pytest.mark.parametrize("shape", [(1, 37, 53), (29, 37, 1), (7, 37, 53), (1, 37, 1), (40, 37, 53)])
@pytest.mark.parametrize("pad", [0, 3])
def test_matches_numpy(lib, dtype, ta, tb, shape, pad):
    rng = np.random.default_rng(hash((ta, tb, shape, pad)) % 2**32)
    m, k, n = shape
    a, b, c = (rng.standard_normal(s).astype(dtype) for s in ((m, k), (k, n), (m, n)))
    got, took = _gemm(lib, dtype, a, b, ta=ta, tb=tb, alpha=1.5, beta=0.5, c=c, pad=pad)
    want = 1.5 * (a.astype(np.float64) @ b) + 0.5 * c
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)
    assert took == _expected_route(dtype, ta, tb, m, n)


needs_kernel = pytest.mark.skipif(not SMALL_M_KERNEL_HERE, reason="the few-row kernel needs x86-64 AVX2 + FMA")


@needs_kernel
@pytest.mark.parametrize("m", [1, 2, 3, 5, 10, 32])
@pytest.mark.parametrize("k", [1, 7, 8, 37, 576])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 100, 1537])
def test_few_rows_against_a_transposed_weight(lib, m, k, n):
    """Every tile shape and every k % 8 tail, padded leading dimensions, beta both ways."""
    rng = np.random.default_rng(m * 10_000 + k * 10 + n)
    a, w, c = (rng.standard_normal(s, dtype=np.float32) for s in ((m, k), (n, k), (m, n)))
    got, took = _gemm(lib, np.float32, a, w.T, ta=NO_TRANS, tb=TRANS, alpha=0.75, beta=0.5, c=c, pad=5)
    assert took == ROUTE_SMALL_M
    np.testing.assert_allclose(got, 0.75 * (a.astype(np.float64) @ w.T) + 0.5 * c, rtol=1e-4, atol=1e-4)
    fresh, _ = _gemm(lib, np.float32, a, w.T, ta=NO_TRANS, tb=TRANS, alpha=1.0, beta=0.0,
                     c=np.full((m, n), np.nan, dtype=np.float32))  # beta = 0: C is never read
    np.testing.assert_allclose(fresh, a.astype(np.float64) @ w.T, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_a_row_sums_alike_whatever_the_batch(lib):
    """A sequence's numbers do not depend on its neighbours: each row of a 2..32-row product is
    bit-identical to the same row computed alone (the kernel's promise)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((1536, 576), dtype=np.float32)  # large enough to use the thread pool
    rows = rng.standard_normal((SMALL_M_MAX, 576), dtype=np.float32)
    alone = np.stack([_gemm(lib, np.float32, rows[i:i + 1], w.T, ta=NO_TRANS, tb=TRANS, alpha=1.0, beta=0.0,
                            c=np.zeros((1, 1536), np.float32))[0][0] for i in range(SMALL_M_MAX)])
    for m in (2, 3, 10, 17, SMALL_M_MAX):
        batched, took = _gemm(lib, np.float32, rows[:m], w.T, ta=NO_TRANS, tb=TRANS, alpha=1.0, beta=0.0,
                              c=np.zeros((m, 1536), np.float32))
        assert took == ROUTE_SMALL_M
        assert np.array_equal(batched, alone[:m]), f"rows changed in a batch of {m}"


@needs_kernel
@pytest.mark.parametrize("m", [1, 2, 3, 4, 7, 32])
@pytest.mark.parametrize("k", [1, 5, 300])
@pytest.mark.parametrize("n", [1, 7, 8, 31, 64, 100, 256])
def test_few_rows_against_an_untransposed_narrow_b(lib, m, k, n):
    """Every tile shape and every n % 8 tail, padded leading dimensions, beta both ways."""
    rng = np.random.default_rng(m * 10_000 + k * 10 + n)
    a, b, c = (rng.standard_normal(s, dtype=np.float32) for s in ((m, k), (k, n), (m, n)))
    got, took = _gemm(lib, np.float32, a, b, ta=NO_TRANS, tb=NO_TRANS, alpha=0.75, beta=0.5, c=c, pad=5)
    assert took == ROUTE_SMALL_NN
    np.testing.assert_allclose(got, 0.75 * (a.astype(np.float64) @ b) + 0.5 * c, rtol=1e-4, atol=1e-4)
    fresh, _ = _gemm(lib, np.float32, a, b, ta=NO_TRANS, tb=NO_TRANS, alpha=1.0, beta=0.0,
                     c=np.full((m, n), np.nan, dtype=np.float32))  # beta = 0: C is never read
    np.testing.assert_allclose(fresh, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_untransposed_rows_sum_alike_whatever_the_batch(lib):
    """Attention's values product: a query head's row is the same number alone (mlx-lm's one
    product per head) and among its group's rows (engine.fused_decode's grouped attention)."""
    rng = np.random.default_rng(9)
    values = rng.standard_normal((777, 64), dtype=np.float32)
    probs = rng.random((SMALL_M_MAX, 777), dtype=np.float32)
    alone = np.stack([_gemm(lib, np.float32, probs[i:i + 1], values, ta=NO_TRANS, tb=NO_TRANS, alpha=1.0, beta=0.0,
                            c=np.zeros((1, 64), np.float32))[0][0] for i in range(SMALL_M_MAX)])
    for m in (2, 3, 7, 14, SMALL_M_MAX):
        grouped, took = _gemm(lib, np.float32, probs[:m], values, ta=NO_TRANS, tb=NO_TRANS, alpha=1.0, beta=0.0,
                              c=np.zeros((m, 64), np.float32))
        assert took == ROUTE_SMALL_NN
        assert np.array_equal(grouped, alone[:m]), f"rows changed in a group of {m}"


@needs_kernel
def test_concurrent_callers_share_the_pool_safely(lib):
    """Two threads' products at once: one gets the pool, the other computes alone; both are right."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4096, 576), dtype=np.float32)
    inputs = [rng.standard_normal((8, 576), dtype=np.float32) for _ in range(16)]

    def one(a):
        return _gemm(lib, np.float32, a, w.T, ta=NO_TRANS, tb=TRANS, alpha=1.0, beta=0.0,
                     c=np.zeros((8, 4096), np.float32))[0]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, inputs))
    for a, got in zip(inputs, results):
        np.testing.assert_allclose(got, a.astype(np.float64) @ w.T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 64, 300), (96, 64, 1)])
def test_beta_zero_never_reads_c(lib, shape):
    # MLX hands BLAS an uninitialised output with beta = 0; a NaN there must not come through.
    rng = np.random.default_rng(1)
    m, k, n = shape
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    got, took = _gemm(lib, np.float32, a, b, ta=NO_TRANS, tb=NO_TRANS, alpha=1.0, beta=0.0,
                      c=np.full((m, n), np.nan, dtype=np.float32))
    assert took in (ROUTE_ROW, ROUTE_COLUMN)  # wider than the few-row kernels take, and taller
    np.testing.assert_allclose(got, a @ b, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_a_forked_child_computes_with_its_own_pool(shim):
    """The parent's workers do not survive fork(): the child starts its own and gets right answers."""
    probe = r"""
import ctypes, os, sys, numpy as np
lib = ctypes.CDLL(sys.argv[1]); fn = lib.cblas_sgemm
p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
fn.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
rng = np.random.default_rng(0)
w = rng.standard_normal((4096, 576), dtype=np.float32); x = rng.standard_normal((8, 576), dtype=np.float32)
def product():
    c = np.full((8, 4096), np.nan, np.float32)
    fn(101, 111, 112, 8, 4096, 576, 1.0, x.ctypes.data, 576, w.ctypes.data, 576, 0.0, c.ctypes.data, 4096)
    return float(np.abs(c - x.astype(np.float64) @ w.T).max())
assert product() < 1e-3  # the parent's pool is up
pid = os.fork()
if pid == 0:
    os._exit(0 if max(product() for _ in range(3)) < 1e-3 else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe, str(shim.path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


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


@pytest.mark.parametrize("jit", ["as shipped", "avx2"])
def test_grouped_attention_is_mlxs_attention_number_for_number(shim, jit, tmp_path):
    """With the shim preloaded, engine.fused_decode's grouped attention gives exactly the numbers of
    mx.fast.scaled_dot_product_attention (MLX's CPU composite, one product per query head), with
    a left-padding boolean mask, an additive mask or none; the fused decoder turns it on, and the
    lean step built on it gives mlx-lm's own step's greedy tokens."""
    probe = r"""
import json, mlx.core as mx
from serving.blas_shim import kernels_in_process
from serving.engine.fused_decode import FusedDecoder, grouped_attention
from tests.unit.tiny_llama import tiny_llama
mx.random.seed(3)
same = []
for rows, heads, kv, length, d in [(1, 9, 3, 40, 64), (5, 9, 3, 301, 64), (3, 14, 2, 77, 64), (2, 4, 4, 17, 32)]:
    q = mx.random.normal((rows, heads, 1, d)); k = mx.random.normal((rows, kv, length, d))
    v = mx.random.normal((rows, kv, length, d))
    masks = [None, mx.random.uniform(shape=(rows, 1, 1, length)) > 0.2,
             mx.random.normal((rows, heads, 1, length))]
    for mask in masks:
        want = mx.fast.scaled_dot_product_attention(q, k, v, scale=d ** -0.5, mask=mask)
        got = grouped_attention(q, k, v, scale=d ** -0.5, mask=mask)
        same.append(bool(mx.array_equal(want, got).item()))
from mlx_lm.generate import BatchGenerator
from serving.engine.lean_step import install_lean_step
from serving.engine.request import SamplingParams
from serving.engine.sampling import build_sampler
model = tiny_llama(seed=23)
prompts = [[5, 9, 13, 5, 9], [7] * 21, [1, 2, 3, 4, 1, 2, 3, 4, 1, 2], [42, 43]]
def decode(lean):
    g = BatchGenerator(model, stop_tokens=[], completion_batch_size=4, prefill_batch_size=2, prefill_step_size=8,
                       stream=mx.default_stream(mx.default_device()))
    if lean:
        install_lean_step(g, model)
    uids = g.insert(prompts, max_tokens=[20] * len(prompts),
                    samplers=[build_sampler(SamplingParams(temperature=0.0)) for _ in prompts])
    out = {u: [] for u in uids}
    while any(len(t) < 20 for t in out.values()):
        for r in g.next()[1]:
            out[r.uid].append(r.token)
    return [out[u] for u in uids], g._generation_batch
want, _ = decode(False)
got, batch = decode(True)
print(json.dumps({"same": same, "kernels": kernels_in_process(), "fused_grouped": batch.fused._grouped,
                  "tokens_same": want == got}))
"""
    import mlx.core as mx

    from serving.cpu_jit import ENV_MARK, plan

    env = {k: v for k, v in os.environ.items() if k != ENV_MARK}
    env.update({"LD_PRELOAD": str(shim.path), backend.REEXEC_MARKER: "test", "TMPDIR": str(tmp_path)})
    if jit == "avx2":  # MLX's CPU compiler with the server's flags (serving/cpu_jit.py), where this CPU allows
        env.update(plan(tmp_path / "cache", environ=env, mlx_version=mx.__version__)[1])
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["kernels"] is SMALL_M_KERNEL_HERE and out["fused_grouped"] is SMALL_M_KERNEL_HERE
    if SMALL_M_KERNEL_HERE:
        assert all(out["same"]), out["same"]
    assert out["tokens_same"], "the lean step's greedy tokens differ from mlx-lm's own step's"
