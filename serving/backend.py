"""Which MLX backend and which BLAS this process computes with.

On Linux the mlx-cpu wheel bundles reference netlib BLAS, which is 13-33x
slower than OpenBLAS for fp32 matmuls (see FACTS.md). The BLAS library must be
preloaded before libmlx loads, so the choice is made by re-executing the server
process with LD_PRELOAD set, and what was actually loaded is read back from
/proc/self/maps rather than assumed.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REEXEC_MARKER = "MLX_PROOF_BLAS_CHOSEN"
OPENBLAS_ENV = "MLX_PROOF_OPENBLAS"
OPENBLAS_GLOBS = (
    "/usr/lib/*-linux-gnu/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


@dataclass(frozen=True)
class BackendInfo:
    backend: str  # metal | cuda | cpu
    device: str
    blas: str
    mlx_version: str
    platform: str

    def as_dict(self) -> dict:
        return asdict(self)


def find_openblas() -> Path | None:
    override = os.environ.get(OPENBLAS_ENV)
    if override:
        return Path(override) if Path(override).exists() else None
    for pattern in OPENBLAS_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return Path(hits[0])
    return None


def wants_openblas_preload(policy: str, *, environ: dict[str, str]) -> Path | None:
    """The OpenBLAS path to preload, or None when no re-exec is needed."""
    if sys.platform != "linux" or policy == "reference" or environ.get(REEXEC_MARKER):
        return None
    path = find_openblas()
    if path is None:
        if policy == "openblas":
            raise RuntimeError(
                "--blas openblas was asked for but no libopenblas.so.0 was found; "
                "install Debian's libopenblas0-pthread or set MLX_PROOF_OPENBLAS"
            )
        return None
    if str(path) in environ.get("LD_PRELOAD", ""):
        return None
    return path


def reexec_with_openblas(path: Path, argv: list[str]) -> None:
    """Replace this process with the same command, OpenBLAS preloaded."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (str(path), env.get("LD_PRELOAD", "")) if p)
    env[REEXEC_MARKER] = "openblas"
    os.execve(sys.executable, [sys.executable, "-m", "serving", *argv], env)


def loaded_blas() -> str:
    """Name the BLAS library mapped into this process."""
    if sys.platform == "darwin":
        return "accelerate"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    libs = {line.split()[-1] for line in maps.splitlines() if ".so" in line}
    for lib in sorted(libs):
        if "libopenblas" in lib:
            return f"openblas ({lib})"
    for lib in sorted(libs):
        if "mlx_cpu.libs/libblas" in lib:
            return "reference-netlib (bundled with mlx-cpu)"
    return "none-loaded"


def detect_backend() -> BackendInfo:
    import mlx.core as mx

    if mx.metal.is_available():
        backend = "metal"
    elif mx.cuda.is_available():
        backend = "cuda"
    else:
        backend = "cpu"
    return BackendInfo(
        backend=backend,
        device=str(mx.default_device()),
        blas=loaded_blas() if backend == "cpu" else "n/a",
        mlx_version=mx.__version__,
        platform=f"{platform.system()} {platform.machine()}",
    )


def default_dtype(backend: str) -> str:
    # fp32 is the only fast CPU path (bf16/fp16 never hit BLAS); on GPUs the
    # halved memory traffic of bf16 wins.
    return "float32" if backend == "cpu" else "bfloat16"
