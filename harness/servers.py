"""What to launch for each kind of server: ours (any revision) and the peers.

Every server gets the same model folder. A peer gets, by default, the BLAS our server
loaded (LD_PRELOAD, as ours preloads it): "engine against engine", so a difference in
numbers is a difference in servers. A peer labelled KIND-as-shipped gets no preload: it runs
as its own README sets it up (mlx_lm.server from PyPI on Linux: MLX's bundled reference
BLAS), the "as shipped" figure. What each server was given and what it really mapped
(read from /proc/PID/maps) goes into the manifest.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .sut import RunningServer, free_port, launched

REPO_ROOT = Path(__file__).resolve().parent.parent
PEER_KINDS = ("mlx-lm", "mlx-lm-nocache", "vllm-mlx")
AS_SHIPPED = "-as-shipped"  # a peer label suffix: that peer without our BLAS
# How a server's BLAS was set up: ours chooses its own; a peer gets ours, or none (as shipped).
BLAS_SETUPS = ("own", "same-as-ours", "as-shipped")
# Our server with other flags, run beside "ours" under its own label.
OUR_VARIANTS = {
    "ours-nocache": ("--prefix-cache-bytes", "0"),
    # The price of each determinism mode, measured beside default batching in one run (either
    # mode turns the profile's prefix cache off itself).
    "ours-deterministic": ("--deterministic",),
    "ours-batch-invariant": ("--batch-invariant",),
    "ours-compiled": ("--decode-step", "compiled"),
}
# What each peer's prompt/prefix cache is configured to do as we launch it (not whether it hits).
PEER_PREFIX_CACHE = {"mlx-lm": "on", "mlx-lm-nocache": "off", "vllm-mlx": "on"}
VLLM_MLX_PYTHON_ENV = "MLX_PROOF_VLLM_MLX_PYTHON"


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; the message is recorded in the evidence."""


@dataclass(frozen=True)
class ServerSpec:
    label: str
    kind: str  # "mlx-proof" or a PEER_KINDS entry
    revision: str | None = None  # mlx-proof at this git revision; None = the working tree
    extra_args: tuple[str, ...] = ()
    blas: str = "same-as-ours"  # a peer's BLAS_SETUPS entry (ours: "own", whatever this says)

    @property
    def blas_setup(self) -> str:
        return "own" if self.kind == "mlx-proof" else self.blas


@dataclass(frozen=True)
class Target:
    spec: ServerSpec
    server: RunningServer
    argv: tuple[str, ...]
    model_field: str | None  # what to send as "model" (None: omit it)
    ld_preload: str | None = None  # what the harness put in the server's LD_PRELOAD


@dataclass(frozen=True)
class ModelFolder:
    model_id: str
    path: str
    weights_sha256: str
    source: str
    dtype: str


def parse_server_list(text: str) -> list[ServerSpec]:
    """Servers to run beside "ours": peers by kind, and variants of ours by label."""
    specs = []
    for name in filter(None, (p.strip() for p in text.split(","))):
        if name in OUR_VARIANTS:
            specs.append(ServerSpec(label=name, kind="mlx-proof", extra_args=OUR_VARIANTS[name]))
        elif name in PEER_KINDS:
            specs.append(ServerSpec(label=name, kind=name))
        elif name.endswith(AS_SHIPPED) and name.removesuffix(AS_SHIPPED) in PEER_KINDS:
            specs.append(ServerSpec(label=name, kind=name.removesuffix(AS_SHIPPED), blas="as-shipped"))
        else:
            known = [*OUR_VARIANTS, *PEER_KINDS, *(k + AS_SHIPPED for k in PEER_KINDS)]
            raise ValueError(f"unknown peer {name!r}; known: {', '.join(known)}")
        if [s.label for s in specs].count(name) > 1:
            raise ValueError(f"peer {name!r} is listed twice")  # one label, one server: records would mix
    return specs


def _flag(args: tuple[str, ...], name: str) -> str | None:
    """The value of the last `name VALUE` or `name=VALUE` in args."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def prefix_cache_state(spec: ServerSpec, *, health: dict | None = None) -> str:
    """Whether the server was set up to reuse cached prompt prefixes: "on", "off" or "unknown".

    For ours, the resolved config in /health wins (profiles can set it too);
    failing that, our own flag; a revision that reports neither says "unknown".
    """
    if spec.kind != "mlx-proof":
        return PEER_PREFIX_CACHE.get(spec.kind, "unknown")
    config = (health or {}).get("config") or {}
    size = config.get("prefix_cache_bytes")
    if size is None:
        size = _flag(spec.extra_args, "--prefix-cache-bytes")
    try:
        return "unknown" if size is None else ("on" if int(size) > 0 else "off")
    except (TypeError, ValueError):
        return "unknown"


def blas_preload(health: dict) -> str | None:
    """The BLAS our server preloaded (an LD_PRELOAD value), so peers can be given the same one.

    Ours reports it as backend.blas_preload; a revision from before that names only a system
    OpenBLAS inside backend.blas.
    """
    backend = health.get("backend", {})
    if "blas_preload" in backend:
        return backend["blas_preload"] or None
    match = re.search(r"openblas \((.+)\)", backend.get("blas", ""))
    return match.group(1) if match else None


def process_blas(pid: int) -> str:
    """The BLAS a running process has mapped, named as our server names its own."""
    from serving.backend import mapped_libraries, name_blas

    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "unknown"
    return name_blas(mapped_libraries(maps))


def blas_entry(target: Target) -> dict:
    """The manifest's account of one server's BLAS: how it was set up, and what it mapped."""
    return {"setup": target.spec.blas_setup, "ld_preload": target.ld_preload,
            "loaded": process_blas(target.server.pid)}


@contextlib.contextmanager
def checkout(revision: str | None):
    """A source tree at `revision` (a temporary git worktree), or the working tree."""
    if revision is None:
        yield REPO_ROOT
        return
    tmp = Path(tempfile.mkdtemp(prefix="mlx-proof-rev-"))
    tree = tmp / "tree"
    subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", "--quiet", str(tree), revision],
                   check=True, capture_output=True, text=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(tree)],
                       capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def _vllm_mlx_argv(model: ModelFolder, port: int) -> list[str]:
    python = os.environ.get(VLLM_MLX_PYTHON_ENV) or str(REPO_ROOT / ".peers" / "vllm-mlx" / "bin" / "python")
    if not Path(python).exists():
        raise PeerUnavailable(
            f"vllm-mlx is not installed (looked for {python}); `nox -s peers` installs it into .peers/, "
            f"or set {VLLM_MLX_PYTHON_ENV}")
    exe = Path(python).with_name("vllm-mlx")
    return [str(exe), "serve", model.path, "--host", "127.0.0.1", "--port", str(port), "--continuous-batching"]


def command(spec: ServerSpec, *, model: ModelFolder, port: int, profile: str) -> tuple[list[str], str | None]:
    """(argv, model field to send) for one server."""
    if spec.kind == "mlx-proof":
        # a catalog model by its id (so the server reports its catalog provenance); a local folder by its path
        name = model.path if model.source == "local folder" else model.model_id
        argv = [sys.executable, "-m", "serving", "serve", "--model", name, "--port", str(port),
                "--profile", profile, *spec.extra_args]
        return argv, model.model_id
    if spec.kind in ("mlx-lm", "mlx-lm-nocache"):
        argv = [sys.executable, "-m", "mlx_lm", "server", "--model", model.path, "--host", "127.0.0.1",
                "--port", str(port)]
        if spec.kind == "mlx-lm-nocache":
            argv += ["--prompt-cache-size", "0"]
        # mlx_lm.server looks a "model" name up on the hub; omitting it serves the loaded folder.
        return argv + list(spec.extra_args), None
    if spec.kind == "vllm-mlx":
        return _vllm_mlx_argv(model, port) + list(spec.extra_args), model.path  # it rejects requests without one
    raise ValueError(f"unknown server kind {spec.kind!r}")


@contextlib.contextmanager
def launch(spec: ServerSpec, *, model: ModelFolder, profile: str, log_dir: Path,
           preload: str | None, ready_timeout_s: float = 1800):
    """Start one server and yield its Target; PeerUnavailable if it cannot run here."""
    port = free_port()
    with checkout(spec.revision) as tree:
        argv, model_field = command(spec, model=model, port=port, profile=profile)
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        # Ours at that revision first, not the installed copy; then whatever was there (on the GPU
        # machine the CUDA build of mlx lives on PYTHONPATH).
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
        hub = Path(tempfile.mkdtemp(prefix="mlx-proof-hub-"))
        env.update(HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1")  # mlx_lm.server's /v1/models needs the folder
        if preload and spec.blas_setup == "same-as-ours":
            env["LD_PRELOAD"] = preload  # ours chooses its BLAS itself and reports it
        log_path = log_dir / f"{spec.label}.log"
        try:
            with launched(argv, port=port, log_path=log_path, env=env, cwd=tree,
                          ready_timeout_s=ready_timeout_s) as running:
                yield Target(spec, running, tuple(argv), model_field, env.get("LD_PRELOAD"))
        finally:
            shutil.rmtree(hub, ignore_errors=True)
