"""Write and read evidence run directories (the contract is harness/EVIDENCE.md).

Evidence is validated against harness/schemas/ on the way in and out, and is written into a hidden
temporary sibling renamed into place: a run directory holds a complete, valid run or does not exist.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import jsonschema

HARNESS_VERSION = "0.10.0"  # 0.10.0: compare, regress and calibrate decide on the median inter-token latency (validation.metric); 0.9.0: run records carry foreign_cpu and steal_cpu (machine load outside the run); 0.8.0: launch blocks (workload.design.launches); 0.7.0: each server's BLAS (setup, preload, mapped) in the manifest, comparisons
# labelled engine-vs-engine / as-shipped, the roofline in the manifest, the profile suite; calibrate (was
# validate) proves its bounds; profile validate bundles (manifest "bundle")
# 0.6.0: suites as plug-ins, the divergence suite, failed repeats count in
# comparisons, balanced server orders (workload.design)
# 0.5.0: tools parse fidelity leaves cut-off calls out (counted as cut_off)
# 0.4.0: the tools suite (tool_case records, summary "tools")
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
GZIP_OVER_BYTES = 200_000  # "200 kB" in EVIDENCE.md (SI): a calibrate part's 0.86 MB of records packs to ~0.15 MB
MAX_LISTED_PROBLEMS = 10


class EvidenceError(ValueError):
    """Evidence that breaks the contract; the message lists the first problems."""


class EvidenceWarning(UserWarning):
    """A directory under the evidence root that is not a valid run (it is skipped)."""


@dataclass(frozen=True)
class Run:
    path: Path
    manifest: dict
    records: tuple[dict, ...]
    summary: dict


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text()))


def new_run_id(suite: str) -> str:
    """YYYYmmddTHHMMSSZ-<suite>-<6 hex>, in UTC."""
    suites = _validator("manifest").schema["properties"]["suite"]["enum"]
    if suite not in suites:
        raise ValueError(f"unknown suite {suite!r}; expected one of {suites}")
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{suite}-{secrets.token_hex(3)}"


def path_safe(name: str) -> str:
    """One path component: "/" -> "--" (as in the Hugging Face cache), anything outside
    [A-Za-z0-9._-] -> "_", a leading "." -> "_" (so no ".", ".." or hidden names)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("/", "--"))
    safe = re.sub(r"^\.", "_", safe)
    if not safe:
        raise ValueError("empty name cannot be a path component")
    return safe


def run_dir(root: Path, *, model_id: str, profile: str, run_id: str) -> Path:
    """root/<model-id>/<profile>/<run-id>, with model id and profile made path-safe."""
    if not re.match(_validator("summary").schema["properties"]["run_id"]["pattern"], run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return Path(root) / path_safe(model_id) / path_safe(profile) / run_id


def _command(argv: list[str], *, cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# The code a run executes: the server, the harness and the suites' runners and case files.
SOURCE_DIRS = ("serving", "harness", "suites")
SOURCE_SUFFIXES = {".py", ".toml", ".json", ".jsonl", ".txt", ".c"}


def source_sha256(repo: Path) -> str:
    """A digest of the files that run, read from disk rather than from git: a copied tree (a
    borrowed GPU machine whose .git is older than its files) still names the code it ran."""
    digest = hashlib.sha256()
    for top in SOURCE_DIRS:
        for path in sorted((repo / top).rglob("*")):
            if path.is_file() and path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts:
                digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _git(repo: Path) -> dict:
    source = {"source_sha256": source_sha256(repo)}
    commit = _command(["git", "rev-parse", "HEAD"], cwd=repo)
    if commit is None:
        # Outside git nothing can be dirty relative to a commit; "unknown" is the signal.
        return {"commit": "unknown", "dirty": False, **source}
    # Evidence and reports are outputs, not code: writing them must not make later runs "dirty".
    status = _command(["git", "status", "--porcelain", "--", ".", ":!evidence", ":!reports"], cwd=repo)
    return {"commit": commit, "dirty": status != "", **source}  # a failed status cannot vouch for a clean tree


def _cpu() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else []
    # platform.processor() says only "arm" on Apple silicon; sysctl has the chip name.
    brand = _command(["sysctl", "-n", "machdep.cpu.brand_string"]) if platform.system() == "Darwin" else None
    return (names[0].strip() if names else None) or brand or platform.processor() or platform.machine() or "unknown"


def _gpu() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    out = _command(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    names = [line.strip() for line in (out or "").splitlines() if line.strip()]
    if not names:
        return None
    return ", ".join(dict.fromkeys(names)) + (f" x{len(names)}" if len(names) > 1 else "")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(*, repo: Path | None = None) -> dict:
    """git, versions and host sections of the manifest, measured now.

    memory_gb is in GiB (2**30 bytes), the unit in which RAM is sold.
    """
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"git": _git(repo or Path(__file__).resolve().parents[1]),
            "versions": {"python": platform.python_version(), "mlx": _version("mlx"), "mlx_lm": _version("mlx-lm")},
            "host": {"os": platform.platform(), "cpu": _cpu(), "gpu": _gpu(),
                     "cores": os.cpu_count() or 1, "memory_gb": round(memory, 2)}}


def _check(manifest: dict, records: Iterable[dict], summary: dict, *, directory: Path) -> None:
    problems = _problems(manifest, records, summary, directory=directory)
    if problems:
        raise EvidenceError(f"invalid evidence for {directory}:\n  " + "\n  ".join(problems))


def _problems(manifest: dict, records: Iterable[dict], summary: dict, *, directory: Path) -> list[str]:
    """Schema problems first (at most MAX_LISTED_PROBLEMS); cross-file checks only on valid files."""
    problems = []
    for label, name, docs in (("manifest.json", "manifest", [manifest]), ("summary.json", "summary", [summary]),
                              ("raw.jsonl", "raw_record", records)):
        validator = _validator(name)
        for line, doc in enumerate(docs, start=1):
            where = f"{label} line {line}" if name == "raw_record" else label
            for err in validator.iter_errors(doc):
                problems.append(f"{where} at /{'/'.join(map(str, err.absolute_path))}: {err.message}")
                if len(problems) >= MAX_LISTED_PROBLEMS:
                    return problems
    if problems:
        return problems
    run_id = manifest["run_id"]
    if summary["run_id"] != run_id:
        problems.append(f"summary.json run_id {summary['run_id']!r} differs from manifest's {run_id!r}")
    if run_id.split("-")[1] != manifest["suite"]:
        problems.append(f"run_id {run_id!r} does not name the manifest's suite {manifest['suite']!r}")
    if directory.name != run_id:
        problems.append(f"directory {directory.name!r} is not named by run_id {run_id!r}")
    try:
        if _when(manifest["finished_at"]) < _when(manifest["started_at"]):
            problems.append("manifest.json finished_at is before started_at")
    except ValueError as exc:  # the pattern admits e.g. month 13
        problems.append(f"manifest.json: {exc}")
    return problems


def _dumps(doc, **kwargs) -> str:
    try:
        return json.dumps(doc, ensure_ascii=False, allow_nan=False, **kwargs)
    except ValueError as exc:  # NaN/inf: not JSON, and never a measurement
        raise EvidenceError(f"non-finite number in evidence: {exc}") from exc


def _set_aside(directory: Path, *, manifest: dict, records: list[dict], summary: dict) -> Path:
    kept = directory.parent / f".rejected-{directory.name}"
    kept.mkdir(parents=True, exist_ok=True)
    dump = functools.partial(json.dumps, ensure_ascii=False, default=str)
    (kept / "manifest.json").write_text(dump(manifest, indent=2) + "\n")
    (kept / "summary.json").write_text(dump(summary, indent=2) + "\n")
    (kept / "raw.jsonl").write_text("".join(dump(r) + "\n" for r in records))
    return kept


def write_run(directory: Path, *, manifest: dict, records: list[dict], summary: dict) -> Path:
    """Validate, then create directory with its three files; never overwrite (evidence is immutable)."""
    directory = Path(directory)
    try:
        _check(manifest, records, summary, directory=directory)
    except EvidenceError as exc:
        # What was measured is never thrown away (a contracts run is half an hour of clients):
        # it is set aside, unpublished, beside where it would have gone.
        kept = _set_aside(directory, manifest=manifest, records=records, summary=summary)
        raise EvidenceError(f"{exc}\nthe run's files are kept, unpublished, in {kept}") from None
    files = {"manifest.json": _dumps(manifest, indent=2) + "\n", "summary.json": _dumps(summary, indent=2) + "\n"}
    raw = "".join(_dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    raw_name = "raw.jsonl"
    if len(raw) > GZIP_OVER_BYTES:
        raw_name, raw = "raw.jsonl.gz", gzip.compress(raw, mtime=0)  # mtime=0: same records, same bytes
    files[raw_name] = raw
    if directory.exists():
        raise FileExistsError(f"evidence directory already exists: {directory}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        for name, content in files.items():
            with open(tmp / name, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
                os.fsync(f.fileno())  # the rename must not publish files still in the page cache
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; evidence is meant to be read
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _when(timestamp: str) -> datetime:
    return datetime.fromisoformat(re.sub(r"Z$", "+00:00", timestamp))  # Python 3.10 does not read "Z"


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name} in evidence")  # NaN/Infinity are not JSON


def _load(text: str, where: str):
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise EvidenceError(f"{where}: {exc}") from exc


def read_run(directory: Path) -> Run:
    directory = Path(directory)
    plain, packed = directory / "raw.jsonl", directory / "raw.jsonl.gz"
    if plain.exists() == packed.exists():
        raise EvidenceError(f"{directory}: expected exactly one of raw.jsonl, raw.jsonl.gz")
    try:
        raw = plain.read_text() if plain.exists() else gzip.decompress(packed.read_bytes()).decode()
        manifest = _load((directory / "manifest.json").read_text(), "manifest.json")
        summary = _load((directory / "summary.json").read_text(), "summary.json")
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise EvidenceError(f"{directory}: {exc}") from exc
    # split("\n"), not splitlines(): U+2028 may sit unescaped inside a JSON string.
    records = tuple(_load(line, f"raw.jsonl line {i}")
                    for i, line in enumerate(raw.split("\n"), start=1) if line.strip())
    _check(manifest, records, summary, directory=directory)
    return Run(path=directory, manifest=manifest, records=records, summary=summary)


def iter_runs(root: Path) -> Iterator[Run]:
    """Valid runs under root/<model>/<profile>/<run-id>/, newest started_at first.

    Hidden directories (unfinished writes) are ignored; other invalid
    directories are skipped with an EvidenceWarning naming the problem.
    """
    runs = []
    for path in sorted(Path(root).glob("*/*/*")):
        if not path.is_dir() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            runs.append(read_run(path))
        except EvidenceError as exc:
            warnings.warn(f"skipping {path}: {exc}", EvidenceWarning, stacklevel=2)
    runs.sort(key=lambda r: (_when(r.manifest["started_at"]), r.manifest["run_id"]), reverse=True)
    yield from runs
