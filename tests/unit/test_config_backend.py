from pathlib import Path

import pytest

from serving import backend
from serving.config import ServerConfig, build_config


def test_defaults_profile_and_flags_merge_in_order(tmp_path: Path):
    profiles = tmp_path / "p.toml"
    profiles.write_text('[profile.a]\nserve = { max_concurrency = 4, port = 9000 }\n'
                        '[profile.text-default]\nserve = {}\n')
    cfg = build_config({"profile": "a", "port": 9100, "model": None}, profiles_path=profiles)
    assert (cfg.max_concurrency, cfg.port, cfg.model) == (4, 9100, ServerConfig.model)
    assert cfg.waitress_threads == 4 + ServerConfig.max_queue + 8


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ValueError, match="text-default"):
        build_config({"profile": "nope"})


@pytest.mark.parametrize("bad", [{"port": 0}, {"max_tokens_default": 0},
                                 {"max_tokens_default": 10, "max_tokens_ceiling": 5},
                                 {"over_ceiling": "explode"}])
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError):
        ServerConfig(**bad).validate()


def test_shipped_profiles_all_build():
    from serving.config import load_profiles
    for name in load_profiles():
        assert build_config({"profile": name}).profile == name


@pytest.mark.skipif(not backend.sys.platform.startswith("linux"), reason="Linux BLAS choice")
def test_openblas_preload_decision(monkeypatch, tmp_path):
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"")
    monkeypatch.setenv(backend.OPENBLAS_ENV, str(lib))
    assert backend.wants_openblas_preload("auto", environ={}) == lib
    assert backend.wants_openblas_preload("reference", environ={}) is None
    assert backend.wants_openblas_preload("auto", environ={"LD_PRELOAD": str(lib)}) is None
    assert backend.wants_openblas_preload("auto", environ={backend.REEXEC_MARKER: "1"}) is None
    monkeypatch.setenv(backend.OPENBLAS_ENV, str(tmp_path / "missing.so"))
    assert backend.wants_openblas_preload("auto", environ={}) is None
    with pytest.raises(RuntimeError, match="libopenblas0-pthread"):
        backend.wants_openblas_preload("openblas", environ={})


def test_loaded_blas_names_something():
    assert backend.loaded_blas()


def test_a_lower_ceiling_alone_lowers_the_default(tmp_path: Path):
    profiles = tmp_path / "p.toml"
    profiles.write_text('[profile.text-default]\nserve = {}\n')
    cfg = build_config({"max_tokens_ceiling": 256}, profiles_path=profiles)
    assert (cfg.max_tokens_default, cfg.max_tokens_ceiling) == (256, 256)
