"""The life of a thread that owns a model: load, serve until stopped, and never leave a caller waiting.

MLX evaluates arrays on the stream of the thread that made them, so a model is loaded and
run on one thread only; other threads hand work in and read answers. `start` returns once the
model is loaded (a load failure is raised there, on the caller's thread, rather than lost in
the worker). `alive` says whether new work is taken; `_running` whether the thread is still
there to answer work already handed in, which it still is while it stops. When `_serve`
returns (stopping) or raises (dying), whatever is still pending is failed with a message, so
no caller waits on a thread that has gone.

A subclass loads in `_load` (what it returns is handed to `_serve`), serves in `_serve` until
`_stopping` is set, fails what is left in `_fail_pending`, and names itself in the messages.
"""

from __future__ import annotations

import logging
import threading
from typing import Any


class ModelThread:
    # A subclass names itself in these: they reach clients (start's errors, failed work) and the log.
    LOAD_TIMEOUT = "the model did not load in time"
    LOAD_FAILED = "model failed to load"
    DIED = "model thread died"
    SHUT_DOWN = "server shutting down"

    def __init__(self, *, name: str, log: logging.Logger) -> None:
        self._log = log
        self._ready = threading.Event()
        self._stopping = threading.Event()
        # Set when the thread is dying of an error, before it fails what is pending, so
        # a reader polling `_running` hears of it even if its own answer never comes.
        self._dead = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ---- caller side ----------------------------------------------------------
    def start(self, *, timeout_s: float | None = None) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(self.LOAD_TIMEOUT)
        if self._load_error is not None:
            raise RuntimeError(f"{self.LOAD_FAILED}: {self._load_error}") from self._load_error

    def _running(self) -> bool:
        """The thread is still there to answer work handed in (it may be stopping)."""
        return self._thread.is_alive() and not self._dead.is_set()

    @property
    def alive(self) -> bool:
        """The thread takes new work."""
        return self._running() and not self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    # ---- thread side ----------------------------------------------------------
    def _load(self) -> Any:
        raise NotImplementedError

    def _serve(self, loaded: Any) -> None:
        raise NotImplementedError

    def _fail_pending(self, message: str) -> None:
        raise NotImplementedError

    def _died(self, exc: BaseException) -> str:
        """What pending work is failed with when `_serve` raises `exc`."""
        return f"the engine stopped: {type(exc).__name__}: {exc}"

    def _run(self) -> None:
        try:
            loaded = self._load()
        except BaseException as exc:  # surfaced to start()'s caller
            self._load_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._serve(loaded)
        except BaseException as exc:  # the thread is dying: nobody may be left waiting
            self._dead.set()
            self._log.exception(self.DIED)
            self._fail_pending(self._died(exc))
            raise
        self._fail_pending(self.SHUT_DOWN)
