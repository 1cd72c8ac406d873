"""One thread that owns a speech model (Whisper, or a local TTS model) and runs its jobs in turn.

The chat engine has its own thread; keeping a speech model on another means a transcription
never stalls a chat stream (they share the processor, not a queue). MLX gives every thread
its own default stream, and arrays are evaluated on the thread whose stream made them, so
the model is loaded and run on this one thread only. Jobs wait in a bounded queue; a full
queue is refused at once rather than left to time out.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Protocol

log = logging.getLogger("mlx_proof.speech")


class Backend(Protocol):
    def load(self) -> None: ...
    def run(self, job: Any) -> Any: ...


class QueueFull(RuntimeError):
    pass


class WorkerDown(RuntimeError):
    pass


_STOP = object()


class ModelWorker:
    def __init__(self, backend: Backend, *, name: str, max_queue: int = 8) -> None:
        self.backend = backend
        self.name = name
        self._jobs: queue.Queue = queue.Queue(maxsize=max(1, max_queue))
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"mlx-{name}", daemon=True)

    def start(self, *, timeout_s: float | None = None) -> None:
        """Load the model on the worker thread and wait for it; a failed load raises here."""
        self._thread.start()
        if not self._loaded.wait(timeout_s):
            raise WorkerDown(f"the {self.name} model did not load in time")
        if self._load_error is not None:
            raise WorkerDown(f"the {self.name} model failed to load: {self._load_error}") from self._load_error

    def alive(self) -> bool:
        return self._thread.is_alive() and self._load_error is None

    def submit(self, job) -> Future:
        if not self.alive():
            raise WorkerDown(f"the {self.name} worker is not running")
        future: Future = Future()
        try:
            self._jobs.put_nowait((job, future))
        except queue.Full:
            raise QueueFull(f"{self._jobs.maxsize} {self.name} requests are already waiting") from None
        return future

    def stop(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            self.backend.load()
        except BaseException as exc:  # reported by start(), on the caller's thread
            self._load_error = exc
            self._loaded.set()
            return
        self._loaded.set()
        while (item := self._jobs.get()) is not _STOP:
            job, future = item
            if not future.set_running_or_notify_cancel():  # its request gave up while it waited
                continue
            try:
                future.set_result(self.backend.run(job))
            except Exception as exc:  # one bad job must not end the worker
                log.exception("%s job failed", self.name)
                future.set_exception(exc)
