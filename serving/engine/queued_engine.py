"""What every engine (the text engine in loop.py, the vision engine) shares: a model thread fed
through a bounded inbox of GenerationRequests.

HTTP threads never touch the model: `submit` hands a RequestHandle to the inbox and the
engine thread answers on it. A request is refused at once, with EngineBusy (a 429), when more
wait than --max-queue beyond the decode slots free now, so a burst is told to come back
instead of timing out in a queue. The counters are one set of names across engines because
/metrics and the reports read them from stats() whichever engine serves.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .model_thread import ModelThread
from .request import EngineBusy, EngineDown, Finished, GenerationRequest, RequestHandle, Usage

if TYPE_CHECKING:
    from .loop import EngineSettings

COUNTERS = ("requests", "peak_decoding", "generated_tokens", "steps", "errors", "rejected_busy", "timeouts",
            "step_failures")


class QueuedEngine(ModelThread):
    def __init__(self, loader: Callable[[], Any], settings: "EngineSettings", *, name: str, log: logging.Logger,
                 counters: tuple[str, ...] = ()) -> None:
        super().__init__(name=name, log=log)
        self._loader = loader
        self.settings = settings
        self._inbox: "queue.Queue[RequestHandle]" = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0  # submitted and not yet decoding; guarded by _lock
        self.tokenizer = None
        self._counters = dict.fromkeys((*COUNTERS, *counters), 0)

    # ---- what an engine says of itself ---------------------------------------
    @property
    def _capacity(self) -> int:
        """How many sequences may decode together."""
        raise NotImplementedError

    def _decoding(self) -> int:
        raise NotImplementedError

    def _cancel(self, handle: RequestHandle) -> None:
        """Called on the handle's reader thread when its client goes away."""
        raise NotImplementedError

    # ---- HTTP-thread side -------------------------------------------------
    def submit(self, request: GenerationRequest) -> RequestHandle:
        if not self.alive:
            raise EngineDown("the engine is not running")
        with self._lock:
            if self._queued >= self.settings.max_queue + max(0, self._capacity - self._decoding()):
                self._counters["rejected_busy"] += 1
                raise EngineBusy(f"{self._queued} requests are already waiting (--max-queue {self.settings.max_queue})")
            self._queued += 1
        handle = RequestHandle(request, self._cancel, self._running)
        self._inbox.put(handle)
        return handle

    def _load_stats(self, *, prefix_cache: dict) -> dict:
        """The tail of stats() that every engine has: load, limits and counters."""
        decoding = self._decoding()
        with self._lock:
            waiting = self._queued
        return {
            "decoding": decoding,
            "waiting": waiting,
            "queue_depth": waiting,
            "max_concurrency": self._capacity,
            "max_queue": self.settings.max_queue,
            "prefix_cache": prefix_cache,
            **self._counters,
        }

    # ---- engine-thread side -----------------------------------------------
    def _fail_pending(self, message: str) -> None:
        self._fail_queued(message)

    def _fail_queued(self, message: str, waiting: Iterable[RequestHandle] = ()) -> None:
        """Fail `waiting` (taken from the inbox, not yet decoding), then all still in the inbox."""
        pending = list(waiting)
        while True:
            try:
                pending.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for handle in pending:
            self._finish(handle, Finished("error", Usage(len(handle.request.prompt_tokens), 0), error=message))
        with self._lock:
            self._queued = 0

    @staticmethod
    def _overdue(handle: RequestHandle, now: float) -> bool:
        limit = handle.request.timeout_s
        return limit is not None and now - handle.created > limit

    @staticmethod
    def _finish(handle: RequestHandle, event: Finished) -> None:
        handle.put(event)
        handle.mark_done()
