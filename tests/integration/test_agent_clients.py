"""Claude Code and Codex CLI, the real programs, answer through our server with auth on.

Each runs once per session as its users run it (`claude -p`, `codex exec`), offline,
against a real server on the real default model. `nox -s tests` installs both from npm
into .nox/clients;
where a program is missing the test is skipped and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from harness.sut import free_port, launched

pytestmark = pytest.mark.integration

KEY = "ci-secret-key"
MODEL = "smollm2-135m"
QUESTION = "What is the capital of France? Answer in one short sentence."


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    port = free_port()
    argv = [sys.executable, "-m", "serving", "serve", "--model", MODEL, "--port", str(port),
            "--api-key", KEY, "--max-tokens-ceiling", "256"]
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    with launched(argv, port=port, log_path=log, ready_timeout_s=1800) as running:
        yield running


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not on PATH (`nox -s tests` installs it from npm into .nox/clients)")
    return path


def _run(argv: list[str], env: dict, cwd) -> subprocess.CompletedProcess:
    # A cold first turn prefills a 3-5k-token agent prompt: minutes on a 2-core CPU.
    done = subprocess.run(argv, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    print("$", " ".join(argv), "\n", done.stdout[-3000:], done.stderr[-2000:])
    return done


def test_claude_code_answers(keyed_server, tmp_path):
    claude = _need("claude")
    env = {"ANTHROPIC_BASE_URL": keyed_server.base_url, "ANTHROPIC_AUTH_TOKEN": KEY,
           "ANTHROPIC_SMALL_FAST_MODEL": MODEL, "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
           "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "256", "DISABLE_TELEMETRY": "1",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
           "DISABLE_ERROR_REPORTING": "1", "HOME": str(tmp_path)}
    done = _run([claude, "-p", QUESTION, "--model", MODEL], env, tmp_path)
    assert done.returncode == 0
    assert "Paris" in done.stdout


def test_codex_cli_answers(keyed_server, tmp_path):
    codex = _need("codex")
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(f'''model = "{MODEL}"
model_provider = "mlxproof"

[model_providers.mlxproof]
name = "mlx-proof"
base_url = "{keyed_server.base_url}/v1"
env_key = "MLX_PROOF_KEY"
wire_api = "responses"

[analytics]
enabled = false

[features]
plugins = false
''')
    done = _run([codex, "exec", "--skip-git-repo-check", QUESTION],
                {"MLX_PROOF_KEY": KEY, "CODEX_HOME": str(home)}, tmp_path)
    assert done.returncode == 0
    assert "Paris" in done.stdout
