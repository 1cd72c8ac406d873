"""Measure, rather than assume, what preloading OpenBLAS (system, or the shim) does for MLX here.

Each BLAS runs in its own child process (the library is chosen at load time),
interleaved A B A B so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from .backend import REEXEC_MARKER, find_openblas

PROBE = r"""
import json, time, mlx.core as mx
n = 1024
a = mx.random.normal((n, n)); b = mx.random.normal((n, n)); mx.eval(a, b)
mx.eval(a @ b)
times = []
for _ in range(5):
    t = time.perf_counter(); mx.eval(a @ b); times.append(time.perf_counter() - t)
def median_us(product):
    mx.eval(product())
    spans = []
    for _ in range(50):
        t = time.perf_counter(); mx.eval(product()); spans.append(time.perf_counter() - t)
    return sorted(spans)[len(spans) // 2] * 1e6
# one row through a projection, as in every batch-1 decode step
x = mx.random.normal((1, 576)); w = mx.random.normal((576, 1536)); mx.eval(x, w)
# ten rows through a projection stored as nn.Linear stores it (x @ W.T), as in a decode step of 10 streams
x10 = mx.random.normal((10, 576)); wt = mx.random.normal((1536, 576)); mx.eval(x10, wt)
print(json.dumps({"gflops": 2 * n**3 / min(times) / 1e9, "row_us": median_us(lambda: x @ w),
                  "rows10_us": median_us(lambda: x10 @ wt.T)}))
"""


def _probe(preload: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env[REEXEC_MARKER] = "probe"
    if preload:
        env["LD_PRELOAD"] = preload
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(*, rounds: int = 3) -> dict:
    from .blas_shim import ShimUnavailable, ensure_shim

    openblas = find_openblas()
    variants = {"reference": None}
    if openblas is not None:
        variants["openblas"] = str(openblas)
    try:
        variants["shim"] = str(ensure_shim().path)
    except ShimUnavailable as exc:
        print(f"cblas shim: {exc}")
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, preload in variants.items():
            results[name].append(_probe(preload))
    return {name: {"median_gflops": statistics.median(r["gflops"] for r in v),
                   "median_row_us": statistics.median(r["row_us"] for r in v),
                   "median_rows10_us": statistics.median(r["rows10_us"] for r in v),
                   "runs": [r["gflops"] for r in v]} for name, v in results.items()}


def main() -> int:
    if sys.platform != "linux":
        print("BLAS choice only matters for MLX's Linux CPU backend; nothing to measure here.")
        return 0
    results = measure()
    for name, r in results.items():
        print(f"{name:10s} {r['median_gflops']:8.1f} GFLOP/s  (1024x1024 fp32 matmul, median of {len(r['runs'])}); "
              f"1x576 . 576x1536 {r['median_row_us']:6.0f} us; 10x576 . (1536x576)^T {r['median_rows10_us']:6.0f} us")
    for name in ("openblas", "shim"):
        if name in results:
            ratio = results[name]["median_gflops"] / results["reference"]["median_gflops"]
            print(f"{name} / reference = {ratio:.1f}x")
    if "openblas" not in results and "shim" not in results:
        print("no OpenBLAS found: pip install scipy-openblas32 (and a C compiler), or on Debian/Ubuntu: "
              "apt-get install libopenblas0-pthread")
    return 0
