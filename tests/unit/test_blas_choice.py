"""Which BLAS `--blas` preloads, the fallbacks, and how the loaded one is named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from serving import backend
from serving.blas_shim import ShimUnavailable
from serving.config import build_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux BLAS choice")


def _shim_at(path: Path):
    return lambda cache_dir: path


def _no_shim(why: str = "no C compiler (cc, gcc or clang; or $CC) to build the cblas shim"):
    def build(cache_dir):
        raise ShimUnavailable(why)
    return build


@pytest.fixture
def system_openblas(monkeypatch, tmp_path):
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"")
    monkeypatch.setenv(backend.OPENBLAS_ENV, str(lib))
    return lib


@pytest.fixture
def no_system_openblas(monkeypatch, tmp_path):
    monkeypatch.setenv(backend.OPENBLAS_ENV, str(tmp_path / "missing.so"))


def test_auto_prefers_the_shim(system_openblas, tmp_path):
    shim = tmp_path / "libmlxproof_cblas.so"
    preload, note = backend.choose_preload("auto", environ={}, build_shim=_shim_at(shim))
    assert preload == backend.Preload("shim", shim) and note is None


def test_auto_falls_back_to_system_openblas_and_says_why(system_openblas):
    preload, note = backend.choose_preload("auto", environ={}, build_shim=_no_shim())
    assert preload.kind == "openblas" and preload.path == system_openblas
    assert "no C compiler" in note and preload.note == note


def test_auto_falls_back_to_reference_and_says_why(no_system_openblas):
    preload, note = backend.choose_preload("auto", environ={}, build_shim=_no_shim())
    assert preload is None
    assert "no C compiler" in note and "reference BLAS" in note


def test_shim_policy_refuses_to_fall_back(system_openblas):
    with pytest.raises(RuntimeError, match="--blas shim was asked for but no C compiler"):
        backend.choose_preload("shim", environ={}, build_shim=_no_shim())


def test_openblas_policy_never_builds_the_shim(system_openblas):
    def build(cache_dir):
        raise AssertionError("the shim was built for --blas openblas")
    preload, _ = backend.choose_preload("openblas", environ={}, build_shim=build)
    assert preload.kind == "openblas"


def test_reference_and_reexecuted_processes_preload_nothing(tmp_path):
    shim = _shim_at(tmp_path / "x.so")
    assert backend.choose_preload("reference", environ={}, build_shim=shim) == (None, None)
    assert backend.choose_preload("auto", environ={backend.REEXEC_MARKER: "shim"}, build_shim=shim) == (None, None)


def test_an_already_preloaded_shim_is_not_preloaded_twice(tmp_path):
    shim = tmp_path / "libmlxproof_cblas.so"
    preload, _ = backend.choose_preload("auto", environ={"LD_PRELOAD": f"/x/other.so:{shim}"},
                                        build_shim=_shim_at(shim))
    assert preload is None


def test_the_cache_dir_reaches_the_builder(tmp_path):
    seen = []
    backend.choose_preload("shim", environ={}, cache_dir=tmp_path, build_shim=lambda d: seen.append(d) or d)
    assert seen == [tmp_path]


def test_config_accepts_shim():
    assert build_config({"blas": "shim"}).blas == "shim"
    with pytest.raises(ValueError, match="shim"):
        build_config({"blas": "mkl"})


SHIM = "/home/u/.cache/mlx-proof/blas-shim/scipy-openblas32-0.3.34-abc/libmlxproof_cblas.so"
WHEEL = "/venv/lib/python3.11/site-packages/scipy_openblas32/lib/libscipy_openblas.so"
BUNDLED = "/venv/lib/python3.11/site-packages/mlx_cpu.libs/libblas-bd8a282c.so.3.10.0"
DEBIAN = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so"


def test_names_the_shim_with_openblas_own_account():
    named = backend.name_blas({SHIM, WHEEL, BUNDLED}, openblas_config=lambda p: "OpenBLAS 0.3.34 Haswell"
                              if p == WHEEL else None)
    assert named == f"openblas-shim (OpenBLAS 0.3.34 Haswell; {SHIM})"


def test_names_system_openblas_and_reference():
    assert backend.name_blas({DEBIAN, BUNDLED}) == f"openblas ({DEBIAN})"
    assert backend.name_blas({BUNDLED}) == "reference-netlib (bundled with mlx-cpu)"
    assert backend.name_blas(set()) == "none-loaded"


def test_mapped_libraries_reads_paths_only():
    maps = (f"7f00-7f01 r-xp 00000000 08:01 1 {DEBIAN}\n"
            "7f02-7f03 rw-p 00000000 00:00 0 \n"
            "7f04-7f05 r--p 00000000 00:00 0 [vdso]\n")
    assert backend.mapped_libraries(maps) == {DEBIAN}


def test_probes_name_their_blas_by_file_and_their_compiler_flags():
    shim = "/home/someone/.cache/mlx-proof/blas-shim/x/libmlxproof_cblas.so"
    assert backend.probe_setup({"LD_PRELOAD": shim, backend.CPU_JIT_ENV: "-mavx2 -mfma"}) == {
        "blas": "libmlxproof_cblas.so", "cpu_jit_flags": "-mavx2 -mfma", "allocator": "glibc malloc"}
    assert backend.probe_setup({}) == {"blas": "MLX's linked BLAS (no LD_PRELOAD)", "cpu_jit_flags": None,
                                       "allocator": "glibc malloc"}
    for both in (f"{JEMALLOC}:{shim}", f" {JEMALLOC}  {shim}\n"):  # ld.so takes colons or whitespace
        assert backend.probe_setup({"LD_PRELOAD": both}) == {"blas": "libmlxproof_cblas.so", "cpu_jit_flags": None,
                                                             "allocator": "jemalloc"}


JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.fixture
def jemalloc(monkeypatch, tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    monkeypatch.setattr(backend, "JEMALLOC_GLOBS", (str(tmp_path / "libjemalloc.so.*"),))
    return lib


@pytest.fixture
def no_jemalloc(monkeypatch, tmp_path):
    monkeypatch.setattr(backend, "JEMALLOC_GLOBS", (str(tmp_path / "nothing" / "libjemalloc.so.*"),))


def test_auto_preloads_jemalloc_where_installed(jemalloc):
    assert backend.choose_allocator("auto", environ={}) == (jemalloc, None)
    assert backend.choose_allocator("jemalloc", environ={}) == (jemalloc, None)
    # already preloaded, or in the re-executed server: nothing more to do
    assert backend.choose_allocator("auto", environ={"LD_PRELOAD": f"{SHIM}:{jemalloc}"}) == (None, None)
    assert backend.choose_allocator("auto", environ={backend.REEXEC_MARKER: "shim"}) == (None, None)


def test_without_jemalloc_auto_says_why_and_jemalloc_refuses(no_jemalloc):
    path, note = backend.choose_allocator("auto", environ={})
    assert path is None and "libjemalloc2" in note
    with pytest.raises(RuntimeError, match="libjemalloc2"):
        backend.choose_allocator("jemalloc", environ={})


def test_system_malloc_is_a_choice(jemalloc):
    assert backend.choose_allocator("system", environ={}) == (None, "--malloc system")
    # the note travels to the re-executed server, which reports it
    marker = {backend.REEXEC_MARKER: "shim", backend.ALLOCATOR_ENV: "--malloc system"}
    assert backend.choose_allocator("auto", environ=marker) == (None, "--malloc system")


def test_an_override_path_wins_and_a_missing_one_is_none(jemalloc, tmp_path):
    other = tmp_path / "elsewhere.so"
    other.write_bytes(b"")
    assert backend.find_jemalloc({backend.JEMALLOC_ENV: str(other)}) == other
    assert backend.find_jemalloc({backend.JEMALLOC_ENV: str(tmp_path / "gone.so")}) is None


def test_peers_are_given_the_blas_not_the_allocator(monkeypatch):
    maps = "".join(f"7f00-7f01 r-xp 00000000 08:01 1 {lib}\n" for lib in (SHIM, JEMALLOC))
    monkeypatch.setattr(backend, "_maps", lambda: maps)
    monkeypatch.setattr(backend.os.path, "realpath", lambda p: p)
    assert backend.preloaded_blas({"LD_PRELOAD": f"{JEMALLOC}:{SHIM}"}) == SHIM
    monkeypatch.setenv("MALLOC_CONF", backend.JEMALLOC_CONF)
    assert backend.loaded_allocator() == f"jemalloc ({JEMALLOC}; MALLOC_CONF={backend.JEMALLOC_CONF})"


def test_the_reexec_preloads_the_allocator_first_and_keeps_its_pages(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(backend.os, "execve", lambda exe, argv, env: seen.update(env=env, argv=argv))
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/other.so")
    backend.reexec_with_preload(backend.Preload("shim", Path(SHIM)), ["serve"], allocator=Path(JEMALLOC))
    env = seen["env"]
    assert env["LD_PRELOAD"] == f"{JEMALLOC}:{SHIM}:/other.so" and env[backend.REEXEC_MARKER] == "shim"
    assert env["MALLOC_CONF"] == backend.JEMALLOC_CONF and seen["argv"][-1] == "serve"
    monkeypatch.setenv("MALLOC_CONF", "narenas:2")  # the user's own settings win
    backend.reexec_with_preload(None, ["serve"], allocator=Path(JEMALLOC), allocator_note=None)
    assert seen["env"]["MALLOC_CONF"] == "narenas:2" and seen["env"][backend.REEXEC_MARKER] == "none"


def test_malloc_policy_is_validated():
    assert build_config({"malloc": "system"}).malloc == "system"
    with pytest.raises(ValueError, match="malloc must be auto, jemalloc or system"):
        build_config({"malloc": "tcmalloc"})


def test_a_child_given_our_setup_gets_the_allocator_then_the_blas():
    env = {"PATH": "/bin"}
    backend.add_preloads(env, backend.Preload("shim", Path(SHIM)), Path(JEMALLOC))
    assert env == {"PATH": "/bin", "LD_PRELOAD": f"{JEMALLOC}:{SHIM}", "MALLOC_CONF": backend.JEMALLOC_CONF}
    bare = {"PATH": "/bin"}
    backend.add_preloads(bare, None, None)  # nothing to preload: the environment is left as it was
    assert bare == {"PATH": "/bin"}
