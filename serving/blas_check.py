"""Measure, rather than assume, what preloading OpenBLAS does for MLX here.

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
print(json.dumps({"gflops": 2 * n**3 / min(times) / 1e9}))
"""


def _probe(preload: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env[REEXEC_MARKER] = "probe"
    if preload:
        env["LD_PRELOAD"] = preload
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["gflops"]


def measure(*, rounds: int = 3) -> dict:
    openblas = find_openblas()
    variants = {"reference": None}
    if openblas is not None:
        variants["openblas"] = str(openblas)
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, preload in variants.items():
            results[name].append(_probe(preload))
    return {name: {"median_gflops": statistics.median(v), "runs": v} for name, v in results.items()}


def main() -> int:
    if sys.platform != "linux":
        print("BLAS choice only matters for MLX's Linux CPU backend; nothing to measure here.")
        return 0
    results = measure()
    for name, r in results.items():
        print(f"{name:10s} {r['median_gflops']:8.1f} GFLOP/s  (1024x1024 fp32 matmul, median of {len(r['runs'])})")
    if "openblas" in results:
        ratio = results["openblas"]["median_gflops"] / results["reference"]["median_gflops"]
        print(f"openblas / reference = {ratio:.1f}x")
    else:
        print("no OpenBLAS found; on Debian/Ubuntu: apt-get install libopenblas0-pthread")
    return 0
