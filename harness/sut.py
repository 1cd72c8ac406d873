"""Start, wait for, and stop a server process: the system under test.

The harness only ever sees a process and a URL. The same launcher runs our
server, a peer, or our server at another commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class ServerDidNotStart(RuntimeError):
    pass


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    pid: int
    log_path: Path

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as r:
            return json.loads(r.read())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_healthy(url: str, proc: subprocess.Popen, *, timeout_s: float, log_path: Path,
                 health_path: str = "/health") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerDidNotStart(f"server exited with {proc.returncode}; log tail:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url + health_path, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise ServerDidNotStart(f"no healthy answer within {timeout_s:.0f}s; log tail:\n{_log_tail(log_path)}")


def stop(proc: subprocess.Popen, *, grace_s: float = 15) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def launched(argv: list[str], *, port: int, log_path: Path, env: dict[str, str] | None = None,
             ready_timeout_s: float = 1800, cwd: Path | None = None, health_path: str = "/health"):
    """Run `argv` (which must listen on 127.0.0.1:port) until the block ends."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, proc, timeout_s=ready_timeout_s, log_path=log_path, health_path=health_path)
        yield RunningServer(base_url=base_url, pid=proc.pid, log_path=log_path)
    finally:
        stop(proc)
