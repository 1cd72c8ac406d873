"""Build, once per machine, the cblas shim over PyPI's scipy-openblas32 (cblas_shim.c and small_m.c say why).

The shim is compiled from this package's C files with the system C compiler, against the
OpenBLAS inside the installed scipy-openblas32 wheel, and cached under the user cache dir,
keyed by the wheel's version, where the wheel lives and the shim's source: a new wheel, a
moved environment or an edited shim builds a new one. No C compiler, or no wheel, raises
ShimUnavailable with the reason, and the caller falls back (serving/backend.py).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The forwarding layer, and the few-row kernels it routes decode-step products to.
SOURCES = tuple(Path(__file__).with_name(name) for name in ("cblas_shim.c", "small_m.c", "small_m_nn.c", "packed_blocks.c"))
HEADERS = (Path(__file__).with_name("small_m.h"),)
LIB_NAME = "libmlxproof_cblas.so"
CC_ENV = "CC"
# What the built library must export for MLX (nm -D libmlx.so: its cblas_* imports).
EXPORTS = ("cblas_sgemm", "cblas_dgemm", "cblas_cgemm")
# Loaded in a child, so the caller's process never maps a second OpenBLAS.
_LOAD_CHECK = (
    "import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); "
    "[getattr(lib, name) for name in sys.argv[2:]]; "
    "ob = ctypes.CDLL(sys.argv[1]).scipy_openblas_get_config; ob.restype = ctypes.c_char_p; "
    "print(ob().decode())"
)


class ShimUnavailable(RuntimeError):
    """The shim cannot be built or loaded here; the message says why."""


@dataclass(frozen=True)
class Shim:
    path: Path  # the library to LD_PRELOAD
    openblas_version: str  # scipy-openblas32's version
    openblas_lib: Path  # libscipy_openblas.so inside the wheel


def openblas_wheel() -> tuple[str, Path]:
    """(version, library path) of the installed scipy-openblas32."""
    try:
        import scipy_openblas32
    except ImportError as exc:
        raise ShimUnavailable("scipy-openblas32 is not installed (pip install scipy-openblas32)") from exc
    lib = Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"
    if not lib.is_file():
        raise ShimUnavailable(f"scipy-openblas32 {scipy_openblas32.__version__} has no {lib.name} "
                              f"(a wheel for another platform?)")
    return scipy_openblas32.__version__, lib


def find_compiler(environ: dict[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    if environ.get(CC_ENV):
        return shutil.which(environ[CC_ENV])
    return next((found for name in ("cc", "gcc", "clang") if (found := shutil.which(name))), None)


def shim_dir(cache_dir: Path, version: str, lib: Path) -> Path:
    key = hashlib.sha256(b"\0".join([*(source.read_bytes() for source in (*SOURCES, *HEADERS)), str(lib).encode(),
                                     platform.machine().encode()])).hexdigest()[:12]
    return Path(cache_dir) / "blas-shim" / f"scipy-openblas32-{version}-{key}"


def default_cache_dir() -> Path:
    from ..catalog import default_cache_dir as catalog_cache_dir

    return catalog_cache_dir()


def ensure_shim(cache_dir: Path | None = None, *, compiler: str | None = None) -> Shim:
    """The cached shim, built first if needed; ShimUnavailable when it cannot be."""
    if not sys.platform.startswith("linux"):
        raise ShimUnavailable("the cblas shim is for MLX's Linux CPU backend only")
    version, lib = openblas_wheel()
    target = shim_dir(cache_dir or default_cache_dir(), version, lib) / LIB_NAME
    if not target.is_file():
        _build(target, lib, compiler=compiler or find_compiler())
    _check_loads(target)
    return Shim(path=target, openblas_version=version, openblas_lib=lib)


def _build(target: Path, lib: Path, *, compiler: str | None) -> None:
    if compiler is None:
        raise ShimUnavailable("no C compiler (cc, gcc or clang; or $CC) to build the cblas shim")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed into place: servers starting together never load half a file.
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
    os.close(fd)
    # -O3: the kernel's tiles must unroll to keep their sums in registers (about 2x at -O2's speed).
    argv = [compiler, "-O3", "-shared", "-fPIC", "-pthread", "-o", tmp, *map(str, SOURCES), f"-L{lib.parent}",
            f"-l{lib.stem.removeprefix('lib')}", f"-Wl,-rpath,{lib.parent}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ShimUnavailable(f"building the cblas shim failed ({' '.join(argv)}): {done.stderr.strip()[-800:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ShimUnavailable(f"building the cblas shim failed: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


def kernels_in_process() -> bool:
    """Whether this process computes its float32 products through the shim's few-row kernels
    (the shim preloaded, on a CPU that has them): only then does a product's every element sum
    alike whatever its row count, which engine.fused_decode's grouped attention relies on."""
    import ctypes

    try:
        process = ctypes.CDLL(None)
        supported = process.mlxproof_small_m_supported
        process.mlxproof_small_m_sgemm_nn  # noqa: B018 (present only in a shim that has both kernels)
    except (AttributeError, OSError):
        return False
    supported.restype = ctypes.c_int
    return bool(supported())


def _check_loads(path: Path) -> str:
    done = subprocess.run([sys.executable, "-c", _LOAD_CHECK, str(path), *EXPORTS],
                          capture_output=True, text=True, timeout=60, env=_clean_env())
    if done.returncode != 0:
        raise ShimUnavailable(f"the cblas shim {path} does not load: {done.stderr.strip()[-800:]}")
    return done.stdout.strip()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.blas_shim [CACHE_DIR]`: build (or find) the shim and say where it is."""
    args = sys.argv[1:] if argv is None else argv
    try:
        shim = ensure_shim(Path(args[0]) if args else None)
    except ShimUnavailable as exc:
        print(f"cblas shim unavailable: {exc}", file=sys.stderr)
        return 1
    print(f"cblas shim over scipy-openblas32 {shim.openblas_version}: {shim.path}")
    return 0
