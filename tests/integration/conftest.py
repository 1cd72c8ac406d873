"""One real server process on the real default model, shared by the integration tests."""

from __future__ import annotations

import os
import sys

import pytest

from harness.sut import free_port, launched

DEFAULT_MODEL = os.environ.get("MLX_PROOF_TEST_MODEL", "smollm2-135m")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    argv = [sys.executable, "-m", "serving", "serve", "--model", DEFAULT_MODEL,
            "--port", str(port), "--max-concurrency", "8"]
    # The first run fetches and converts the model, which takes minutes on a small CPU.
    with launched(argv, port=port, log_path=log_path, ready_timeout_s=1800) as running:
        yield running
