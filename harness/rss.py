"""Peak resident memory of a server process, sampled while a repeat runs."""

from __future__ import annotations

import threading
from pathlib import Path


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


class PeakRss:
    """Context manager: sample every `interval_s`; `.peak_mb` after exit (None where /proc is absent)."""

    def __init__(self, pid: int, *, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            value = rss_mb(self.pid)
            if value is not None:
                self.peak_mb = max(self.peak_mb or 0.0, value)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
