"""Fetch the pinned bfcl-eval wheel and unpack only its data files.

The wheel is downloaded with this interpreter's pip (`--no-deps`: its install pins are heavy and
nothing of it is imported), checked against the sha256 in cases.toml, and kept; the data files
named by the categories are unpacked beside it. Later runs touch the network not at all.

Where: $MLX_PROOF_BFCL_DIR, else $MLX_PROOF_CACHE/bfcl, else the user cache (~/.cache/mlx-proof/bfcl
on Linux).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "MLX_PROOF_BFCL_DIR"
CACHE_ENV = "MLX_PROOF_CACHE"  # the server's model cache; the data goes in its bfcl/ folder
DATA_PREFIX = "bfcl_eval/data/"  # where the wheel keeps its data files


class DataError(RuntimeError):
    """The wheel could not be fetched, does not match its pin, or lacks a file."""


@dataclass(frozen=True)
class Source:
    package: str
    version: str
    sha256: str | None  # None: unpinned (tests); a real run pins it in cases.toml
    license: str = "unknown"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Unpacked:
    """The data files of one wheel, unpacked: member name (under bfcl_eval/data/) -> path."""

    source: Source
    wheel: Path
    wheel_sha256: str
    files: dict[str, Path]

    def sha256(self, member: str) -> str:
        return sha256_file(self.files[member])


def data_dir() -> Path:
    if override := os.environ.get(DATA_ENV):
        return Path(override).expanduser()
    if cache := os.environ.get(CACHE_ENV):
        return Path(cache).expanduser() / "bfcl"
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "mlx-proof" / "bfcl"
    return Path(platformdirs.user_cache_dir("mlx-proof")) / "bfcl"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel_prefix(source: Source) -> str:
    return f"{re.sub(r'[-_.]+', '_', source.package).lower()}-{source.version}-"


def _find_wheel(folder: Path, source: Source) -> Path | None:
    found = sorted(folder.glob(_wheel_prefix(source) + "*.whl")) if folder.is_dir() else []
    return found[0] if found else None


def _download(source: Source, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
                   "--no-cache-dir", source.requirement, "-d", tmp]
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        wheel = _find_wheel(Path(tmp), source)
        if done.returncode != 0 or wheel is None:
            why = (done.stderr or done.stdout).strip()[-800:]
            raise DataError(f"`pip download {source.requirement}` failed: {why}")
        target = folder / wheel.name
        os.replace(wheel, target)
    return target


def fetch(source: Source, members: Iterable[str], *, root: Path | None = None) -> Unpacked:
    """The wheel (downloaded once) and the named data members (unpacked once), pin checked."""
    root = Path(root) if root is not None else data_dir()
    wheel = _find_wheel(root, source) or _download(source, root)
    digest = sha256_file(wheel)
    if source.sha256 and digest != source.sha256:
        raise DataError(f"{wheel} has sha256 {digest}, but cases.toml pins {source.sha256}; "
                        "delete it to fetch it again, or update the pin on purpose")
    target = root / f"{_wheel_prefix(source)}data"
    files = {}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for member in dict.fromkeys(members):
            inside = DATA_PREFIX + member
            if inside not in names:
                known = sorted(n[len(DATA_PREFIX):] for n in names
                               if n.startswith(DATA_PREFIX) and n.endswith(".json"))
                raise DataError(f"{wheel.name} has no {inside}; its data files: {', '.join(known)}")
            path = target / member
            if not path.exists():  # written under a temporary name, then renamed: never half a file
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(inside) as src, tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(dst.name, path)
            files[member] = path
    return Unpacked(source, wheel, digest, files)
