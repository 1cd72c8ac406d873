"""The engine: one thread owns the model and an mlx-lm BatchGenerator.

HTTP threads never touch MLX. They put requests on an inbox queue and read
events from their handle's queue; the engine thread admits new requests
between decode steps, so sequences join and leave a running batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .request import Finished, GenerationRequest, RequestHandle, TextDelta
from .sampling import build_logits_processors, build_sampler
from .text_stream import TextStream

log = logging.getLogger("mlx_proof.engine")

ENGINE_MODE = "continuous-batching"


@dataclass(frozen=True)
class EngineSettings:
    max_concurrency: int = 32
    prefill_batch_size: int = 8
    prefill_step_size: int = 512
    planted_slowdown: float = 0.0
    log_every_s: float = 10.0


@dataclass
class _Sequence:
    handle: RequestHandle
    text: TextStream
    prompt_len: int
    generated: int = 0


class Engine:
    def __init__(self, loader: Callable[[], tuple[Any, Any]], settings: EngineSettings) -> None:
        self._loader = loader
        self.settings = settings
        self._inbox: "queue.Queue[RequestHandle]" = queue.Queue()
        self._cancels: "queue.Queue[RequestHandle]" = queue.Queue()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlx-engine", daemon=True)
        self.tokenizer = None
        self._counters = {"requests": 0, "running": 0, "peak_running": 0,
                          "generated_tokens": 0, "steps": 0, "errors": 0}

    # ---- HTTP-thread side -------------------------------------------------
    def start(self, *, timeout_s: float | None = None) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the engine did not load its model in time")
        if self._load_error is not None:
            raise RuntimeError(f"model failed to load: {self._load_error}") from self._load_error

    def submit(self, request: GenerationRequest) -> RequestHandle:
        if not self._thread.is_alive():
            raise RuntimeError("the engine is not running")
        handle = RequestHandle(request, self._cancels.put)
        self._inbox.put(handle)
        return handle

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def stats(self) -> dict:
        return {
            "mode": ENGINE_MODE,
            "alive": self._thread.is_alive(),
            "queue_depth": self._inbox.qsize(),
            "max_concurrency": self.settings.max_concurrency,
            **self._counters,
        }

    # ---- engine-thread side -----------------------------------------------
    def _run(self) -> None:
        import mlx.core as mx  # here, not at import: the API layer and its tests stay MLX-free

        try:
            model, self.tokenizer = self._loader()
            generator = self._new_generator(model)
        except BaseException as exc:  # surfaced to start()'s caller
            self._load_error = exc
            self._ready.set()
            return
        self._ready.set()
        active: dict[int, _Sequence] = {}
        last_log = time.monotonic()
        while not self._stopping.is_set():
            self._admit(generator, active, block=not active)
            self._apply_cancels(generator, active)
            self._counters["running"] = len(active)
            if not active:
                continue
            step_started = time.perf_counter()
            try:
                _, responses = generator.next()
            except Exception as exc:  # one bad step must not kill the server
                log.exception("engine step failed; failing %d sequences", len(active))
                self._fail_all(active, str(exc))
                generator = self._new_generator(model)
                continue
            self._counters["peak_running"] = max(self._counters["peak_running"], len(active))
            self._deliver(generator, active, responses)
            self._counters["steps"] += 1
            self._counters["running"] = len(active)
            if self.settings.planted_slowdown:
                # MLX evaluates asynchronously: without a sync the step's compute
                # would overlap the sleep and the planted cost would mostly vanish.
                import mlx.core as mx
                mx.synchronize()
                time.sleep(self.settings.planted_slowdown * (time.perf_counter() - step_started))
            if time.monotonic() - last_log > self.settings.log_every_s:
                last_log = time.monotonic()
                log.info("batch: %d running, %d queued, %d tokens so far",
                         len(active), self._inbox.qsize(), self._counters["generated_tokens"])
        self._fail_all(active, "server shutting down")

    def _new_generator(self, model):
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator

        eos = sorted(self.tokenizer.eos_token_ids)
        return BatchGenerator(
            model,
            stop_tokens=[[t] for t in eos],
            completion_batch_size=self.settings.max_concurrency,
            prefill_batch_size=min(self.settings.prefill_batch_size, self.settings.max_concurrency),
            prefill_step_size=self.settings.prefill_step_size,
            # MLX streams are thread-local: mlx-lm's module-level stream belongs to
            # the importing thread. This thread's default stream also avoids the
            # abort at exit that a stream made with new_stream() off the main thread causes.
            stream=mx.default_stream(mx.default_device()),
        )

    def _admit(self, generator, active: dict[int, _Sequence], *, block: bool) -> None:
        try:
            handle = self._inbox.get(timeout=0.05) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        batch = [handle]
        while True:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for h in batch:
            if h.done:
                continue
            req = h.request
            try:
                (uid,) = generator.insert(
                    [req.prompt_tokens],
                    max_tokens=[req.max_tokens],
                    samplers=[build_sampler(req.sampling)],
                    logits_processors=[build_logits_processors(req.sampling, context_size=req.max_tokens)],
                )
            except Exception as exc:
                self._finish(h, Finished("error", len(req.prompt_tokens), 0, str(exc)))
                continue
            active[uid] = _Sequence(h, TextStream(self.tokenizer.detokenizer, req.stop), len(req.prompt_tokens))
            self._counters["requests"] += 1

    def _apply_cancels(self, generator, active: dict[int, _Sequence]) -> None:
        while True:
            try:
                handle = self._cancels.get_nowait()
            except queue.Empty:
                return
            for uid, seq in list(active.items()):
                if seq.handle is handle:
                    generator.remove([uid])
                    del active[uid]
                    self._finish(handle, Finished("cancelled", seq.prompt_len, seq.generated))
            handle.mark_done()  # a handle still in the inbox is skipped at admission

    def _deliver(self, generator, active: dict[int, _Sequence], responses) -> None:
        for r in responses:
            seq = active.get(r.uid)
            if seq is None:
                continue
            seq.generated += 1
            self._counters["generated_tokens"] += 1
            # An end-of-sequence token ends the text; it is counted but not shown.
            delta = "" if r.finish_reason == "stop" else seq.text.add(r.token)
            reason = r.finish_reason
            if seq.text.stopped and reason is None:
                generator.remove([r.uid])
                reason = "stop"
            elif reason is not None:
                delta += seq.text.finish()
            if delta:
                seq.handle.events.put(TextDelta(delta, seq.generated))
            if reason is not None:
                del active[r.uid]
                self._finish(seq.handle, Finished(reason, seq.prompt_len, seq.generated))

    def _fail_all(self, active: dict[int, _Sequence], message: str) -> None:
        for seq in active.values():
            self._counters["errors"] += 1
            self._finish(seq.handle, Finished("error", seq.prompt_len, seq.generated, message))
        active.clear()

    @staticmethod
    def _finish(handle: RequestHandle, event: Finished) -> None:
        handle.events.put(event)
        handle.mark_done()
