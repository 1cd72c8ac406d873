"""The cblas shim, built once for the unit tests that call it directly (test_blas_shim.py,
test_packed_blocks.py)."""

from __future__ import annotations

import ctypes

import pytest

from serving.blas_shim import ShimUnavailable, ensure_shim, find_compiler


@pytest.fixture(scope="session")
def shim(tmp_path_factory):
    if find_compiler() is None:
        pytest.skip("no C compiler here")
    try:
        return ensure_shim(tmp_path_factory.mktemp("cache"))
    except ShimUnavailable as exc:
        if "not installed" in str(exc):
            pytest.skip(str(exc))
        raise  # a compiler and the wheel are here: the build must work


@pytest.fixture(scope="session")
def lib(shim):
    handle = ctypes.CDLL(str(shim.path))
    p, i = ctypes.c_void_p, ctypes.c_int
    for name, real in (("cblas_sgemm", ctypes.c_float), ("cblas_dgemm", ctypes.c_double)):
        fn = getattr(handle, name)
        fn.argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
        fn.restype = None
    handle.mlxproof_shim_last_route.restype = ctypes.c_int
    handle.mlxproof_pack_exact.argtypes = [p, i, i, i]
    handle.mlxproof_pack_exact.restype = ctypes.c_int
    handle.mlxproof_packed_bytes.restype = ctypes.c_long
    return handle
