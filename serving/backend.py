"""Which MLX backend and which BLAS this process computes with.

On Linux the mlx-cpu wheel bundles reference netlib BLAS, which is 13-33x
slower than OpenBLAS for fp32 matmuls (see FACTS.md). The BLAS library must be
preloaded before libmlx loads, so the choice is made by re-executing the server
process with LD_PRELOAD set, and what was actually loaded is read back from
/proc/self/maps rather than assumed.

The order `--blas auto` tries: the cblas shim over PyPI's scipy-openblas32
(serving/blas_shim: a current OpenBLAS, one-row products through GEMV, a decode step's
few-row products through its own kernel), then the
system's OpenBLAS, then MLX's bundled reference BLAS. Why an earlier choice was
passed over travels to the re-executed process in BLAS_NOTE_ENV and is reported.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

REEXEC_MARKER = "MLX_PROOF_BLAS_CHOSEN"
OPENBLAS_ENV = "MLX_PROOF_OPENBLAS"
BLAS_NOTE_ENV = "MLX_PROOF_BLAS_NOTE"
CPU_JIT_ENV = "MLX_PROOF_CPU_JIT"  # serving.cpu_jit.ENV_MARK
SHIM_LIB_MARK = "libmlxproof_cblas"
ALLOCATOR_ENV = "MLX_PROOF_MALLOC"  # where the re-executed server learns why it got the allocator it has
JEMALLOC_ENV = "MLX_PROOF_JEMALLOC"  # a libjemalloc to use instead of searching
JEMALLOC_MARK = "libjemalloc"
# Keep freed pages for reuse, as glibc's heap does, unless MALLOC_CONF says otherwise. With
# jemalloc's default purging a 32-prompt prefill took ~200,000 page faults (each a fresh page to
# zero) against ~2,000, and the harness's sweep-c32 lost a fifth of its output rate to it.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
JEMALLOC_GLOBS = (
    "/usr/lib/*-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
)
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
    # The BLAS libraries LD_PRELOAD put into this process (a peer given the same string computes
    # with the same BLAS); None when none is mapped.
    blas_preload: str | None = None
    # Why `--blas` settled on a later choice than its first (e.g. no C compiler for the shim).
    blas_note: str | None = None
    # The flags MLX's CPU compiler (mx.compile's fused kernels) gets beyond its own (serving.cpu_jit);
    # None: as shipped.
    cpu_jit_flags: str | None = None
    # The malloc this process runs on (serving.backend.choose_allocator): "jemalloc (PATH)" or
    # "glibc malloc", and why when it is not the first choice.
    allocator: str | None = None
    allocator_note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _first_hit(patterns: tuple[str, ...]) -> Path | None:
    for pattern in patterns:
        hits = sorted(glob.glob(pattern))
        if hits:
            return Path(hits[0])
    return None


def find_jemalloc(environ: dict[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    override = environ.get(JEMALLOC_ENV)
    if override:
        return Path(override) if Path(override).exists() else None
    return _first_hit(JEMALLOC_GLOBS)


def choose_allocator(policy: str, *, environ: dict[str, str]) -> tuple[Path | None, str | None]:
    """(a libjemalloc to preload, or None; a note on why not) for `--malloc auto|jemalloc|system`.

    MLX's CPU backend allocates every array's buffer on the thread that builds the graph and frees
    it on the stream thread that computed it; glibc's malloc then spends a third or more of the
    engine thread's CPU on its bins (perf, 10-row decode step), CPU a 2-core machine's BLAS
    worker needed. jemalloc's thread caches take that cost away (README, "Speed on Linux CPU")."""
    if policy == "system":
        return None, "--malloc system"
    if sys.platform != "linux":
        return None, None  # another OS's malloc: nothing here to choose
    if environ.get(REEXEC_MARKER):
        return None, environ.get(ALLOCATOR_ENV) or None
    path = find_jemalloc(environ)
    if path is None:
        if policy == "jemalloc":
            raise RuntimeError("--malloc jemalloc was asked for but no libjemalloc.so.2 was found; "
                               "install Debian's libjemalloc2 or set MLX_PROOF_JEMALLOC")
        return None, "no libjemalloc.so.2 (Debian: libjemalloc2): glibc malloc"
    if str(path) in preload_entries(environ):
        return None, None
    return path, None


def find_openblas() -> Path | None:
    override = os.environ.get(OPENBLAS_ENV)
    if override:
        return Path(override) if Path(override).exists() else None
    return _first_hit(OPENBLAS_GLOBS)


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


@dataclass(frozen=True)
class Preload:
    kind: str  # shim | openblas
    path: Path
    note: str | None = None  # why an earlier choice was passed over


def choose_preload(policy: str, *, environ: dict[str, str], cache_dir: Path | None = None,
                   build_shim: Callable[[Path | None], Path] | None = None) -> tuple[Preload | None, str | None]:
    """(what to preload, or None when no re-exec is needed; a note on what was passed over).

    `build_shim(cache_dir)` returns the shim's path or raises ShimUnavailable (default:
    serving.blas_shim.ensure_shim).
    """
    if sys.platform != "linux" or policy == "reference" or environ.get(REEXEC_MARKER):
        return None, None
    note = None
    if policy in ("auto", "shim"):
        from .blas_shim import ShimUnavailable, ensure_shim

        build = build_shim or (lambda d: ensure_shim(d).path)
        try:
            path = build(cache_dir)
        except ShimUnavailable as exc:
            if policy == "shim":
                raise RuntimeError(f"--blas shim was asked for but {exc}") from exc
            note = f"cblas shim unavailable: {exc}"
        else:
            return _unless_preloaded(Preload("shim", path), environ), None
    path = wants_openblas_preload("openblas" if policy == "openblas" else "auto", environ=environ)
    if path is not None:
        return Preload("openblas", path, note), note
    if find_openblas() is None:  # else it is preloaded already
        note = "; ".join(filter(None, [note, "no system OpenBLAS: MLX's bundled reference BLAS"]))
    return None, note


def _unless_preloaded(preload: Preload, environ: dict[str, str]) -> Preload | None:
    return None if str(preload.path) in preload_entries(environ) else preload


def add_preloads(env: dict[str, str], preload: Preload | None, allocator: Path | None) -> None:
    """Put our setup into `env`, for a process about to start: the allocator and the BLAS ahead of
    whatever LD_PRELOAD already holds, and jemalloc's page keeping unless MALLOC_CONF is set."""
    mine = [str(p) for p in (allocator, preload.path if preload else None) if p is not None]
    if mine:
        env["LD_PRELOAD"] = ":".join(p for p in (*mine, env.get("LD_PRELOAD", "")) if p)
    if allocator is not None:
        env.setdefault("MALLOC_CONF", JEMALLOC_CONF)


def reexec_with_preload(preload: Preload | None, argv: list[str], *, module: str = "serving",
                        allocator: Path | None = None, allocator_note: str | None = None) -> None:
    """Replace this process with the same command (`python -m module argv`), the BLAS and the
    allocator preloaded (either may be None)."""
    env = dict(os.environ)
    add_preloads(env, preload, allocator)
    env[REEXEC_MARKER] = preload.kind if preload else "none"
    if preload is not None and preload.note:
        env[BLAS_NOTE_ENV] = preload.note
    if allocator_note:
        env[ALLOCATOR_ENV] = allocator_note
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def reexec_with_openblas(path: Path, argv: list[str]) -> None:
    """Replace this process with the same command, OpenBLAS preloaded."""
    reexec_with_preload(Preload("openblas", path), argv)


def preload_entries(environ) -> list[str]:
    """LD_PRELOAD's libraries: ld.so takes colons or whitespace between them."""
    return [p for p in re.split(r"[:\s]+", environ.get("LD_PRELOAD", "")) if p]


def _is_allocator(path: str) -> bool:
    return JEMALLOC_MARK in os.path.basename(path)


def mapped_libraries(maps_text: str) -> set[str]:
    """The shared libraries named in a /proc/PID/maps text."""
    return {line.split()[-1] for line in maps_text.splitlines() if ".so" in line and "/" in line}


def name_blas(libs: set[str], *, openblas_config: Callable[[str], str | None] = lambda _: None) -> str:
    """Name the BLAS among mapped libraries: the shim, a system OpenBLAS, or MLX's reference."""
    shim = next((lib for lib in sorted(libs) if SHIM_LIB_MARK in lib), None)
    if shim is not None:
        wheel = next((lib for lib in sorted(libs) if "libscipy_openblas" in lib and "/scipy_openblas32/" in lib), None)
        config = openblas_config(wheel) if wheel else None
        return f"openblas-shim ({config or 'scipy-openblas32'}; {shim})"
    for lib in sorted(libs):
        if "libopenblas" in lib:
            return f"openblas ({lib})"
    for lib in sorted(libs):
        if "mlx_cpu.libs/libblas" in lib:
            return "reference-netlib (bundled with mlx-cpu)"
    return "none-loaded"


def _openblas_config(path: str) -> str | None:
    """OpenBLAS's own account of itself (version, kernel, threads), from the library already mapped."""
    import ctypes

    try:
        get = ctypes.CDLL(path).scipy_openblas_get_config
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_char_p
    return get().decode(errors="replace")


def _maps() -> str | None:
    try:
        return Path("/proc/self/maps").read_text()
    except OSError:
        return None


def loaded_blas() -> str:
    """Name the BLAS library mapped into this process."""
    if sys.platform == "darwin":
        return "accelerate"
    maps = _maps()
    if maps is None:
        return "unknown"
    return name_blas(mapped_libraries(maps), openblas_config=_openblas_config)


def preloaded_blas(environ: dict[str, str] | None = None) -> str | None:
    """The LD_PRELOAD entries that are mapped into this process, as an LD_PRELOAD value."""
    environ = os.environ if environ is None else environ
    maps = _maps()
    if maps is None:
        return None
    libs = {os.path.realpath(lib) for lib in mapped_libraries(maps)}
    hits = [p for p in preload_entries(environ) if os.path.realpath(p) in libs and not _is_allocator(p)]
    return ":".join(hits) or None  # the allocator is our server's setup, not its BLAS: peers do not get it


def loaded_allocator() -> str:
    """The malloc mapped into this (Linux) process: jemalloc (with its path) or glibc's."""
    maps = _maps()
    if maps is None:
        return "unknown"
    hit = next((lib for lib in sorted(mapped_libraries(maps)) if _is_allocator(lib)), None)
    if hit is None:
        return "glibc malloc"
    return f"jemalloc ({hit}; MALLOC_CONF={os.environ.get('MALLOC_CONF') or 'its defaults'})"


def probe_setup(environ: dict[str, str] | None = None) -> dict[str, str | None]:
    """What a probe's numbers were computed with, for its JSON: the preloaded BLAS by file name
    (a folder would be this machine's) and the CPU compiler's extra flags (serving.cpu_jit)."""
    environ = os.environ if environ is None else environ
    entries = preload_entries(environ)
    blas = [os.path.basename(p) for p in entries if not _is_allocator(p)]
    return {"blas": ":".join(blas) or "MLX's linked BLAS (no LD_PRELOAD)",
            "cpu_jit_flags": environ.get(CPU_JIT_ENV) or None,
            "allocator": "jemalloc" if any(map(_is_allocator, entries)) else "glibc malloc"}


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
        blas_preload=preloaded_blas() if backend == "cpu" else None,
        blas_note=os.environ.get(BLAS_NOTE_ENV) or None,
        cpu_jit_flags=os.environ.get(CPU_JIT_ENV) or None if backend == "cpu" else None,
        allocator=loaded_allocator() if sys.platform == "linux" else None,
        allocator_note=os.environ.get(ALLOCATOR_ENV) or None,
    )


def decode_step_for(policy: str, backend: str, *, one_at_a_time: bool = False) -> str:
    """Which decode step runs (--decode-step): auto means the compiled step on MLX CUDA, where a
    small model's eager step is bound by kernel launches and the compiled one was measured at about
    twice mlx_lm.server's speed at batch 1 (README: "Compiled decode step"); the batch step
    elsewhere (on this CPU the BLAS dominates and the batch step's fused forward is as fast, and the
    compiled step is unmeasured on Apple silicon). The engine still hands a model whose weights
    are not float32, or that the compiled step cannot lay out, to the batch step
    (generator.first_generator). --deterministic and --batch-invariant bring their own steps."""
    if policy == "auto":
        return "compiled" if backend == "cuda" and not one_at_a_time else "batch"
    return policy


def auto_equivalents() -> dict[str, dict[str, dict[str, str]]]:
    """backend -> flag -> {"auto": what it runs as there}, for flags whose default became auto
    after evidence recorded the value it runs as: the harness matches such runs against a
    profile's `auto` through this (`serving profiles --json`)."""
    return {backend: {"decode_step": {"auto": decode_step_for("auto", backend)}} for backend in ("cpu", "cuda", "metal")}


def lookup_runs(policy: str, backend: str, decode_step: str = "batch") -> bool:
    """Whether prompt-lookup decoding runs (--lookup-decoding): auto means where it was measured to
    pay with greedy tokens unchanged: the CPU backend (the BLAS shim's few-row kernel verifies a
    draft for about a third more than one token costs), and MLX CUDA's compiled step, whose
    verifying forward sums each token as the one-token step does (fused_decode's per-token forms;
    the generator drops it for a model without them). In mlx-lm's batch step on CUDA it made the
    server slower at c=1 and moved greedy ties (README: "Prompt-lookup decoding")."""
    if policy == "auto":
        return backend == "cpu" or (backend == "cuda" and decode_step == "compiled")
    return policy == "on"


def burst_prefill_runs(policy: str, backend: str, *, one_by_one: bool) -> bool:
    """Whether burst prefill runs (--burst-prefill): an idle engine gathers a burst of requests and
    every waiting prompt prefills in one batch. auto means on a CPU: there a batch of prompts costs
    less per token than one alone (a 36-token prompt's products run at ~70 GFLOP/s, ten prompts
    together at ~125 on the 2-core machine), and a lone prompt's prefill takes hundreds of ms, so
    waiting 10 ms for the rest of a burst pays (README, "Admission and prefill batching"). On a GPU
    a short prefill takes about as long as the wait: unmeasured there, so off. Never where prompts
    prefill one by one anyway (the compiled, batch-invariant and serial steps)."""
    if one_by_one:
        return False
    return policy == "on" or (policy == "auto" and backend == "cpu")


def default_dtype(backend: str) -> str:
    """The dtype catalog models are converted to (a model folder is served as it is). fp32 is the
    only fast CPU path (bf16/fp16 never hit BLAS). On MLX CUDA the catalog's models (0.5B
    parameters at most) are bound by kernel launches, not by reading weights, so fp32 costs them
    nothing measurable, and over fp32 weights the compiled decode step gives the eager step's
    greedy tokens exactly, which it does not in bf16 (README: "Compiled decode step"). On Metal,
    unmeasured, bf16's halved memory traffic."""
    return "float32" if backend in ("cpu", "cuda") else "bfloat16"
