"""MLX's CPU compiler, given this CPU's vector instructions (Linux x86-64).

On a CPU, `mx.compile` fuses elementwise ops into C++ that MLX compiles at run time with
`g++ -O3` and caches as shared libraries under `$TMPDIR/mlx/<version>/cpu`. PyPI's Linux wheel
is built for baseline x86-64, so those kernels get no -m flags: every exp in them (SiLU, a
softmax's exponentials) is MLX's polynomial with six calls into libm's fmaf, about 15-25 ns an
element here. With `-mavx2 -mfma` the same source inlines the fused multiply-adds (about 3x
faster for a compiled exp on this machine). `-ffp-contract=off` keeps the compiler from fusing
any other multiply and add, so every kernel computes exactly the numbers it did before: an FMA
instruction rounds once, as libm's fmaf does (the tests check it bit for bit).

Even so, each exp stayed a call to MLX's scalar `simd::exp<float, 1>`, one element at a time.
`-finline-limit=100000` lets g++ inline it into the kernel's loop, and `-fno-trapping-math`
(floating-point operations raise no trap the program handles: MLX never enables one) lets it
compute both sides of the exp's selects, so the loop vectorizes eight lanes wide: the same
operations on each element (vfmadd, vroundps, vdivps round as their scalar forms), so the same
numbers; a 10 x 1536 SwiGLU took 61 us against 110, a softmax over 10 x 49,152 1.2 ms against
2.0 (same bytes out, 6.3 and 14.7 million values; one process each, two rounds).

MLX looks g++ up on PATH each time it compiles, so the server puts a g++ of its own first on
PATH: a two-line script that runs the real one with the flags added. It also points TMPDIR at a
folder of its own, so its kernels never mix with ones compiled without the flags (another
process's, or another machine's in a shared home).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .backend import CPU_JIT_ENV as ENV_MARK  # set to the flags once this process (or its parent) arranged it

FLAGS = ("-mavx2", "-mfma", "-ffp-contract=off", "-finline-limit=100000", "-fno-trapping-math")


@dataclass(frozen=True)
class JitSetup:
    flags: str | None  # what MLX's CPU compiler is given beyond its own, or None: as shipped
    note: str | None = None  # why not, where it is as shipped

    def describe(self) -> str:
        return f"g++ {self.flags}" if self.flags else f"as shipped ({self.note})"


def _cpu_has(*features: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return all(f in flags for f in features)


def plan(cache_dir: Path, *, environ: dict[str, str], mlx_version: str) -> tuple[JitSetup, dict[str, str]]:
    """(the setup, the environment variables that make it) for a server about to load its model."""
    if environ.get(ENV_MARK):
        return JitSetup(environ[ENV_MARK]), {}
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return JitSetup(None, "not Linux x86-64"), {}
    if not _cpu_has("avx2", "fma"):
        return JitSetup(None, "this CPU lacks AVX2 or FMA"), {}
    real = shutil.which("g++", path=environ.get("PATH"))
    if real is None:
        return JitSetup(None, "no g++ on PATH: MLX compiles nothing on this CPU"), {}
    flags = " ".join(FLAGS)
    key = hashlib.sha256("\0".join([os.path.realpath(real), flags, mlx_version]).encode()).hexdigest()[:12]
    home = Path(cache_dir) / "cpu-jit" / key
    bindir, tmpdir = home / "bin", home / "tmp"
    wrapper = bindir / "g++"
    script = f'#!/bin/sh\nexec "{real}" "$@" {flags}\n'
    bindir.mkdir(parents=True, exist_ok=True)
    tmpdir.mkdir(parents=True, exist_ok=True)
    if not wrapper.is_file() or wrapper.read_text() != script:
        staged = bindir / f".g++.{os.getpid()}"  # servers starting together never run half a script
        staged.write_text(script)
        staged.chmod(0o755)
        os.replace(staged, wrapper)
    env = {"PATH": os.pathsep.join([str(bindir), environ.get("PATH", "")]), "TMPDIR": str(tmpdir), ENV_MARK: flags}
    return JitSetup(flags), env


def arrange(cache_dir: Path, *, enabled: bool) -> JitSetup:
    """Set this process up (before MLX compiles anything) and say what it got."""
    if not enabled:
        return JitSetup(None, "--no-cpu-jit-avx2")
    import mlx.core as mx

    setup, env = plan(cache_dir, environ=dict(os.environ), mlx_version=mx.__version__)
    os.environ.update(env)
    return setup
