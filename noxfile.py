"""Sessions for mlx-proof. `nox -s serve` and `nox -s tests` are the whole setup."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

# uv makes the second and later venvs nearly free (shared wheel cache); plain
# virtualenv still works where uv is missing.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

VLLM_MLX_VENV = Path(".peers/vllm-mlx")


@nox.session
def serve(session: nox.Session) -> None:
    """Serve the embedded default model (or `-- --model ID --port N ...`)."""
    session.install("-e", ".")
    _build_blas_shim(session)
    session.run("mlx-proof", "serve", *session.posargs)


# The agent clients the integration tests drive for real, kept inside .nox/ (no global install).
AGENT_CLIENTS = ("@anthropic-ai/claude-code", "@openai/codex", "opencode-ai")
CLIENTS_PREFIX = Path(".nox/clients")


def _install_agent_clients(session: nox.Session) -> dict[str, str]:
    """npm-install Claude Code, Codex CLI and OpenCode; their tests skip (and their contract cells
    are `blocked`), saying so, where this fails."""
    npm = shutil.which("npm")
    if npm is None:
        session.warn("npm not found: the Claude Code and Codex CLI tests will be skipped")
        return {}
    done = subprocess.run([npm, "install", "--prefix", str(CLIENTS_PREFIX), "--no-fund", "--no-audit",
                           "--silent", *AGENT_CLIENTS], capture_output=True, text=True)
    if done.returncode != 0:
        session.warn(f"npm install failed, agent-client tests will be skipped: {done.stderr.strip()[-500:]}")
        return {}
    bin_dir = (CLIENTS_PREFIX / "node_modules" / ".bin").resolve()
    return {"PATH": os.pathsep.join([str(bin_dir), session.bin, os.environ.get("PATH", "")])}


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, plus integration tests against a real server on the real default model
    and real clients (SDKs; Claude Code and Codex CLI from npm)."""
    session.install("-e", ".[test]")
    env = _install_agent_clients(session)
    session.run("pytest", *session.posargs, env=env)


def _build_blas_shim(session: nox.Session) -> None:
    """Linux CPU: compile the cblas shim over scipy-openblas32 now, not at the first server start.
    Exit 1 (no C compiler, say) is not an error: the server then falls back and reports why."""
    if session.run("uname", silent=True, external=True).strip() == "Linux":
        session.run("python", "-m", "serving.blas_shim", success_codes=[0, 1])


def _harness(session: nox.Session, command: str) -> None:
    session.install("-e", ".[harness]")
    _build_blas_shim(session)
    session.run("python", "-m", "harness", command, *session.posargs)


def _install_vllm_mlx(session: nox.Session) -> None:
    if not (VLLM_MLX_VENV / "bin" / "python").exists():
        session.run("uv", "venv", "--quiet", str(VLLM_MLX_VENV), external=True)
    extra = ["mlx[cpu]"] if session.run("uname", silent=True, external=True).strip() == "Linux" else []
    session.run("uv", "pip", "install", "--quiet", "--python", str(VLLM_MLX_VENV / "bin" / "python"),
                "vllm-mlx==0.6.0", *extra, external=True)


@nox.session
def peers(session: nox.Session) -> None:
    """Install vllm-mlx 0.6.0 into its own venv (.peers/vllm-mlx; ~6 GB: it pulls torch)."""
    _install_vllm_mlx(session)


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput: ours vs mlx_lm.server on the seed workload (`-- --peers mlx-lm,vllm-mlx --sweep`;
    the prefix cache: `-- --cases prefix-cache --peers ours-nocache,mlx-lm,mlx-lm-nocache`)."""
    if any("vllm-mlx" in a for a in session.posargs):
        _install_vllm_mlx(session)
    _harness(session, "bench")


@nox.session
def divergence(session: nox.Session) -> None:
    """Batch divergence by token id, serial vs batched vs serial again (`-- --model M --profile P
    --concurrency 2,4,8 --runs 5 --dtype bfloat16 --server-arg=--flag`); evidence and the report."""
    session.install("-e", ".[harness]")
    session.run("python", "-m", "harness", "bench", "--suite", "divergence", *session.posargs)


@nox.session
def compare(session: nox.Session) -> None:
    """Two revisions of our server: `nox -s compare -- REV_A REV_B` (exit 1 on a regression)."""
    _harness(session, "compare")


@nox.session
def calibrate(session: nox.Session) -> None:
    """Harness self-check: A/A false-positive rate and planted-slowdown power, decided on Wilson bounds
    (73 trials by default, hours; `-- --quick` checks the machinery and reports 'not proven')."""
    _harness(session, "calibrate")


def _posarg(session: nox.Session, name: str) -> str | None:
    args = list(session.posargs)
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


@nox.session
def validate(session: nox.Session) -> None:
    """A profile on a model: run exactly the suites its gates read, then promote, promote-with-warning or
    hold (exit 0, 3, 1): `-- --profile text-default --model smollm2-135m`; `--from-evidence` runs nothing."""
    import tomllib

    session.install("-e", ".[test,browser]")
    env: dict[str, str] = {}
    profile = _posarg(session, "--profile")
    suites = tomllib.loads(Path("serving/profiles.toml").read_text()).get("profile", {}).get(profile, {}).get("suites", {})
    contracts = suites.get("contracts", {}).get("args", [])
    clients = set(contracts[contracts.index("--clients") + 1].split(",")) if "--clients" in contracts else set()
    if contracts and "--from-evidence" not in session.posargs:
        if clients & {"claude-code", "codex", "opencode"}:  # the npm agent CLIs
            env = _install_agent_clients(session)
        if "open-webui" in clients:
            env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
            session.run("python", "-m", "suites.contracts.install_open_webui", env=env)
    session.run("python", "-m", "harness", "validate", *session.posargs, env=env)


@nox.session
def publish(session: nox.Session) -> None:
    """reports/published.md, published.json and index.html from the committed evidence (`-- --check`: exit 1
    when the committed matrix is stale)."""
    _harness(session, "publish")


@nox.session
def regress(session: nox.Session) -> None:
    """CI: the working tree against the code behind the evidence that publishes text-default (or
    `-- --base REV`), compare's rule (the one `calibrate` checks); exit 1 on a significant regression."""
    _harness(session, "regress")


@nox.session
def contracts(session: nox.Session) -> None:
    """Real client programs against our server, a client x capability matrix with evidence
    (`-- --clients openai-python,claude-code --tiers sdk,cli,browser --capabilities text,tools`).
    Installs the SDK clients, the npm agent CLIs and (once, ~7 GB, its own venv) Open WebUI."""
    session.install("-e", ".[test,browser]")
    env = _install_agent_clients(session)
    env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"  # Debian's chromium drives Open WebUI
    asked = " ".join(session.posargs)
    if "browser" in asked or "open-webui" in asked or not any(a.startswith(("--tiers", "--clients"))
                                                              for a in session.posargs):
        session.run("python", "-m", "suites.contracts.install_open_webui", env=env)
    session.run("python", "-m", "harness", "contracts", *session.posargs, env=env)


@nox.session
def tools(session: nox.Session) -> None:
    """Tool calling on BFCL data, ours on a model (`-- --model qwen2.5-coder-0.5b --categories simple,irrelevance
    --limit 20 --modes auto,required --server-arg=--tool-prompt=generic`); fetches the bfcl-eval wheel's data once."""
    _harness(session, "tools")


@nox.session
def profile(session: nox.Session) -> None:
    """One decode step broken down on this machine, with our server's BLAS (`-- --model M --batch 1,10,32
    --repeats 20 --context 64 --blas auto`); evidence and the report."""
    _harness(session, "profile-step")


@nox.session
def report(session: nox.Session) -> None:
    """Render reports/ (HTML + markdown) from the evidence in evidence/."""
    _harness(session, "report")
