"""One worker thread that owns the embedding model and batches every input it is given.

HTTP threads hand in a job (all the token sequences of one request) and wait. The worker
takes the first job, keeps collecting for a short window (jobs that arrived while it was busy
are already there), then runs everything it holds as one round: sequences sorted by length
(so little padding), cut into padded batches bounded in rows and in padded tokens. A job is
answered as soon as its last sequence is done, so a short request caught in a round with a
long one comes back after the short batches, not after the whole round. N clients sending at
once share forward passes instead of running N.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from ..engine.model_thread import ModelThread

log = logging.getLogger("mlx_proof.embeddings")


class EmbeddingBusy(Exception):
    """Too many inputs are waiting; the client should retry later."""


class EmbeddingDown(Exception):
    """The worker thread is not running."""


class EmbeddingFailed(Exception):
    """A forward pass failed."""


class EmbeddingTimeout(Exception):
    """The request's time ran out before its vectors were ready."""


class Forward(Protocol):
    def forward(self, batch: list[list[int]]) -> np.ndarray: ...


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 32  # sequences in one forward pass
    # Padded tokens (rows x longest) in one forward pass: bounds memory and the time a pass
    # holds the worker (attention grows with the square of the length).
    max_batch_tokens: int = 8192
    # How long the worker waits for more jobs after the first before it starts a round.
    collect_window_s: float = 0.005
    # Sequences waiting or running; beyond this a request is refused (429).
    max_pending: int = 16384


class _Job:
    def __init__(self, sequences: list[list[int]]) -> None:
        self.sequences = sequences
        self.vectors: list[np.ndarray | None] = [None] * len(sequences)
        self.left = len(sequences)
        self.error: str | None = None
        self.abandoned = False  # its caller stopped waiting; its rows are skipped
        self.done = threading.Event()


class Batcher(ModelThread):
    LOAD_TIMEOUT = "the embedding model did not load in time"
    LOAD_FAILED = "embedding model failed to load"
    DIED = "embedding worker died"
    SHUT_DOWN = "the embedding worker stopped"

    def __init__(self, loader: Callable[[], Forward], settings: BatchSettings = BatchSettings()) -> None:
        super().__init__(name="mlx-embeddings", log=log)
        self._loader = loader
        self.settings = settings
        self._inbox: "queue.Queue[_Job]" = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0  # sequences submitted and not yet answered; guarded by _lock
        self.model: Forward | None = None
        self._counters = {"requests": 0, "inputs": 0, "forward_passes": 0, "rounds": 0, "peak_batch": 0,
                          "padded_tokens": 0, "real_tokens": 0, "errors": 0, "rejected_busy": 0, "timeouts": 0}

    # ---- HTTP-thread side ----
    def start(self, *, timeout_s: float | None = None) -> Forward:
        super().start(timeout_s=timeout_s)
        return self.model

    def embed(self, sequences: list[list[int]], *, timeout_s: float | None = None) -> np.ndarray:
        """(len(sequences), dims) vectors, in order; blocks until they are ready."""
        if not self.alive:
            raise EmbeddingDown("the embedding worker is not running")
        job = _Job(sequences)
        with self._lock:
            if self._pending and self._pending + len(sequences) > self.settings.max_pending:
                self._counters["rejected_busy"] += 1
                raise EmbeddingBusy(f"{self._pending} inputs are already waiting")
            self._pending += len(sequences)
            self._counters["requests"] += 1
            self._counters["inputs"] += len(sequences)
        self._inbox.put(job)
        deadline = None if not timeout_s else time.monotonic() + timeout_s
        while not job.done.wait(0.25):  # polled, so a worker that died is noticed
            if not self._running():
                raise EmbeddingDown("the embedding worker stopped")
            if deadline is not None and time.monotonic() > deadline:
                job.abandoned = True
                with self._lock:
                    self._counters["timeouts"] += 1
                raise EmbeddingTimeout(f"the embeddings were not ready within {timeout_s:g} s")
        if job.error is not None:
            raise EmbeddingFailed(job.error)
        return np.stack(job.vectors)

    def stats(self) -> dict:
        with self._lock:
            return {"alive": self.alive, "pending_inputs": self._pending, **dataclasses.asdict(self.settings),
                    **self._counters}

    # ---- worker side ----
    def _load(self) -> None:
        self.model = self._loader()

    def _serve(self, loaded: None) -> None:
        while not self._stopping.is_set():
            jobs = self._collect()
            if jobs:
                self._round(jobs)

    def _died(self, exc: BaseException) -> str:
        return self.SHUT_DOWN  # the cause is in the log; a client needs only to know the worker is gone

    def _collect(self) -> list[_Job]:
        try:
            jobs = [self._inbox.get(timeout=0.1)]
        except queue.Empty:
            return []
        rows = len(jobs[0].sequences)
        until = time.monotonic() + self.settings.collect_window_s
        while rows < self.settings.max_batch_size:
            left = until - time.monotonic()
            try:
                job = self._inbox.get(timeout=left) if left > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            jobs.append(job)
            rows += len(job.sequences)
        while True:  # whatever else is already queued joins this round
            try:
                jobs.append(self._inbox.get_nowait())
            except queue.Empty:
                return jobs

    def _batches(self, jobs: list[_Job]) -> list[list[tuple[_Job, int]]]:
        """Every sequence of `jobs`, shortest first, cut into batches within the settings' bounds."""
        rows = sorted(((job, i) for job in jobs for i in range(len(job.sequences))),
                      key=lambda ji: len(ji[0].sequences[ji[1]]))
        batches: list[list[tuple[_Job, int]]] = []
        current: list[tuple[_Job, int]] = []
        for job, i in rows:
            length = len(job.sequences[i])  # the longest so far: rows are sorted
            if current and (len(current) + 1 > self.settings.max_batch_size
                            or (len(current) + 1) * length > self.settings.max_batch_tokens):
                batches.append(current)
                current = []
            current.append((job, i))
        if current:
            batches.append(current)
        return batches

    def _round(self, jobs: list[_Job]) -> None:
        self._counters["rounds"] += 1
        for batch in self._batches(jobs):
            batch = [(job, i) for job, i in batch if not job.abandoned and job.error is None]
            if not batch:
                continue
            sequences = [job.sequences[i] for job, i in batch]
            try:
                vectors = self.model.forward(sequences)
            except Exception as exc:  # one bad pass fails its jobs, not the worker
                log.exception("embedding forward pass failed for %d sequences", len(sequences))
                self._counters["errors"] += 1
                for job in {id(j): j for j, _ in batch}.values():
                    self._finish(job, error=f"embedding failed: {type(exc).__name__}: {exc}")
                continue
            self._counters["forward_passes"] += 1
            self._counters["peak_batch"] = max(self._counters["peak_batch"], len(batch))
            self._counters["padded_tokens"] += len(batch) * max(map(len, sequences))
            self._counters["real_tokens"] += sum(map(len, sequences))
            for (job, i), vector in zip(batch, vectors):
                job.vectors[i] = vector
                job.left -= 1
                if job.left == 0:
                    self._finish(job)
        for job in jobs:  # abandoned jobs still hold their count
            if not job.done.is_set():
                self._finish(job, error=job.error or "abandoned")

    def _finish(self, job: _Job, *, error: str | None = None) -> None:
        if job.done.is_set():
            return
        job.error = error
        with self._lock:
            self._pending -= len(job.sequences)
        job.done.set()

    def _fail_pending(self, message: str) -> None:
        while True:
            try:
                self._finish(self._inbox.get_nowait(), error=message)
            except queue.Empty:
                return
