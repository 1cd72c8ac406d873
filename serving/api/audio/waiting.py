"""Hand a job to a speech worker and wait for it, turning every failure into an API error."""

from __future__ import annotations

import concurrent.futures

from ...speech.worker import ModelWorker, QueueFull, WorkerDown
from ..errors import EngineFailure, EngineUnavailable, GenerationTimeout, RateLimited


def run_job(worker: ModelWorker, job, *, timeout_s: float, what: str):
    """`timeout_s` 0 waits as long as it takes (--request-timeout 0)."""
    try:
        future = worker.submit(job)
    except QueueFull as exc:
        raise RateLimited(f"{what} is busy: {exc}; retry shortly", headers={"Retry-After": "5"}) from None
    except WorkerDown as exc:
        raise EngineUnavailable(str(exc)) from None
    try:
        return future.result(timeout=timeout_s or None)
    except concurrent.futures.TimeoutError:
        future.cancel()  # dropped if still queued; a running job finishes unseen
        raise GenerationTimeout(f"{what} took longer than {timeout_s:g} s (--request-timeout)") from None
    except Exception as exc:
        raise EngineFailure(f"{what} failed: {type(exc).__name__}: {exc}") from None
