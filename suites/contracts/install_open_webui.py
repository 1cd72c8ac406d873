"""Open WebUI and a browser to drive it, installed the same way on every machine.

Open WebUI gets its own venv (about 7.4 GB: it pulls torch and a RAG stack) so its pins never
meet the suite's. The browser is the system chromium: Playwright then needs no browser
download, which matters on machines without general network access.

    python -m suites.contracts.install_open_webui [VENV]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

OPEN_WEBUI_VERSION = "0.12.4"
# Its wheels support 3.11 and 3.12; pinning one keeps the venv the same everywhere.
OPEN_WEBUI_PYTHON = "3.11"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".nox" / "open-webui"
CHROMIUM = Path("/usr/bin/chromium")


class InstallError(RuntimeError):
    pass


def executable(venv: Path = DEFAULT_VENV) -> Path:
    return venv / "bin" / "open-webui"


def installed_version(venv: Path = DEFAULT_VENV) -> str | None:
    """The open-webui version in `venv`, or None (no venv, or not installed there)."""
    python = venv / "bin" / "python"
    if not python.exists() or not executable(venv).exists():
        return None
    done = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('open-webui'))"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        raise InstallError("uv not found on PATH: install it (pip install uv) to install Open WebUI")
    return uv


def _step(argv: list[str], what: str, log) -> None:
    """Run one install step with its output shown: the install is long and silence looks hung."""
    log(f"open-webui install: {what}")
    started = time.monotonic()
    done = subprocess.run(argv, check=False)
    if done.returncode != 0:
        raise InstallError(f"{what} failed (exit {done.returncode}): {' '.join(argv)}")
    log(f"open-webui install: {what} done in {time.monotonic() - started:.0f} s")


def ensure_open_webui(venv: Path = DEFAULT_VENV, *, log=print) -> Path:
    """The `open-webui` executable in `venv`, installing the pinned version first if needed."""
    venv = Path(venv)
    if installed_version(venv) == OPEN_WEBUI_VERSION:
        return executable(venv)
    uv = _uv()
    if not (venv / "bin" / "python").exists():
        _step([uv, "venv", "--python", OPEN_WEBUI_PYTHON, str(venv)], f"creating venv {venv}", log)
    _step([uv, "pip", "install", "--python", str(venv / "bin" / "python"), f"open-webui=={OPEN_WEBUI_VERSION}"],
          f"installing open-webui=={OPEN_WEBUI_VERSION} (about 7.4 GB; 10-20 minutes)", log)
    if installed_version(venv) != OPEN_WEBUI_VERSION:
        raise InstallError(f"open-webui=={OPEN_WEBUI_VERSION} is not importable in {venv} after installing it")
    return executable(venv)


def _apt_prefix() -> list[str] | None:
    """How to run apt-get here without a password prompt: as root, or through sudo -n."""
    if shutil.which("apt-get") is None:
        return None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def ensure_browser(*, install: bool = False, log=print) -> Path:
    """Debian's chromium, which Playwright drives through executable_path; with install, apt-get
    installs it where that needs no password."""
    if CHROMIUM.exists():
        return CHROMIUM
    prefix = _apt_prefix() if install else None
    if prefix is not None:
        _step([*prefix, "apt-get", "install", "-y", "--no-install-recommends", "chromium"],
              "installing Debian's chromium", log)
        if CHROMIUM.exists():
            return CHROMIUM
    raise InstallError(f"{CHROMIUM} not found: install Debian's chromium with `sudo apt-get install -y chromium` "
                       "(Playwright's own browser download is not used)")


def main(argv: list[str]) -> int:
    """Install what the browser tier needs. A failure is reported, not fatal: the suite still
    runs, and Open WebUI's cells say `blocked` with the reason."""
    venv = Path(argv[0]) if argv else DEFAULT_VENV
    for what, ensure in (("Open WebUI", lambda: ensure_open_webui(venv)),
                         ("chromium", lambda: ensure_browser(install=True))):
        try:
            print(f"{what}: {ensure()}")
        except InstallError as exc:
            print(f"warning: {what} is not available, its contract cells will be blocked: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
