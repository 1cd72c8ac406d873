"""The engine: one thread owns the model and a batch generator.

HTTP threads never touch MLX. They submit requests to an inbox and read events
from their handle; the engine thread admits waiting requests between decode
steps (up to max_concurrency decode together), so sequences join and leave a
running batch. Every failure inside the loop fails only the requests it
touches; if the thread itself dies, every reader hears so within one poll.

Serial decoding (--deterministic, or the divergence monitor's serialize action
after a divergence) is an admission rule, not a lock around HTTP: a sequence is
admitted only when no other is decoding, so every step's batch holds one
sequence from its prefill to its last token, however long its stream lasts.
"""

from __future__ import annotations

import collections
import logging
import queue
import time
from dataclasses import dataclass
from typing import Any, Callable

from .divergence_monitor import DivergenceMonitor, MonitorSettings
from .logprobs import token_logprob
from .packed_weights import PackedWeights, fused_weights, pack_exact_weights
from .prefix_cache import PrefixCache
from .probe_driver import ProbeDriver
from .queued_engine import QueuedEngine
from .request import Finished, RequestHandle, StepOutput, Usage
from .sampling import build_logits_processors, build_sampler
from .text_stream import TextStream

log = logging.getLogger("mlx_proof.engine")

ENGINE_MODE = "continuous-batching"
COMPILED_MODE = "continuous-batching-compiled"
DETERMINISTIC_MODE = "serial-greedy"
BATCH_INVARIANT_MODE = "batch-invariant"


@dataclass(frozen=True)
class EngineSettings:
    max_concurrency: int = 32
    prefill_batch_size: int = 8
    prefill_step_size: int = 512
    max_queue: int = 64
    # An idle engine's first request waits while more keep arriving (each within this many seconds
    # of the last, at most admission_window_max_s in all), so a burst prefills as one batch.
    admission_quiet_s: float = 0.0
    admission_window_max_s: float = 0.1
    prefix_cache_bytes: int = 1 << 30
    planted_slowdown: float = 0.0
    log_every_s: float = 10.0
    # One sequence decoding at a time, from start to finish (greedy is the API's job).
    deterministic: bool = False
    # Fixed-shape batch-invariant decoding with this many KV positions per slot (None: off).
    batch_invariant_context: int | None = None
    # The compiled, bucketed decode step, with at most this many KV positions per sequence (None: off).
    compiled_step_context: int | None = None
    # The compiled step was chosen by --decode-step auto, not asked for: a model it cannot lay
    # out (other cache kinds) falls back to the batch step instead of failing to load.
    decode_step_auto: bool = False
    # Prompt-lookup drafts per verifying forward for a lone greedy sequence (0: off; the batch and
    # compiled steps, never the batch-invariant one).
    lookup_draft: int = 0
    # Lookup steps only where their verifying forward gives the one-token step's greedy tokens
    # (--lookup-decoding auto); off for a model the compiled step cannot verify that way.
    lookup_exact_only: bool = False
    # The batch step without the log-softmax a greedy batch throws away, with fused projections
    # (engine.lean_step); off: mlx-lm's own step.
    lean_step: bool = True
    # auto: offer the model's float32 weights to the CPU shim's exact GGUF-block packing
    # (engine.packed_weights); off: never.
    packed_weights: str = "auto"
    monitor: MonitorSettings = MonitorSettings()


@dataclass
class _Sequence:
    handle: RequestHandle
    text: TextStream
    prompt_len: int
    cached: int
    generated: int = 0

    def usage(self) -> Usage:
        return Usage(self.prompt_len, self.generated, self.cached)


GeneratorFactory = Callable[[Any, Any, EngineSettings], Any]


def _default_factory(model, tokenizer, settings):
    from .generator import make_generator
    return make_generator(model, tokenizer, settings)


class Engine(QueuedEngine):
    LOAD_TIMEOUT = "the engine did not load its model in time"
    DIED = "engine thread died"

    def __init__(self, loader: Callable[[], tuple[Any, Any]], settings: EngineSettings, *,
                 generator_factory: GeneratorFactory = _default_factory,
                 prefix_cache: PrefixCache | None = None) -> None:
        super().__init__(loader, settings, name="mlx-engine", log=log)
        self._factory = generator_factory
        if settings.deterministic or settings.batch_invariant_context is not None:
            # A cached prefix carries KV computed in another request's batch and prefill
            # chunking, so a hit could change this request's numerics: always prefill afresh.
            prefix_cache = PrefixCache(0)
        self._cache = prefix_cache or PrefixCache(settings.prefix_cache_bytes)
        self._cancels: "queue.Queue[RequestHandle]" = queue.Queue()
        self._waiting: collections.deque[RequestHandle] = collections.deque()
        self._active: dict[int, _Sequence] = {}
        # Why decoding is serial now (None: batching); set on the engine thread only.
        self._serial_reason: str | None = "deterministic" if settings.deterministic else None
        self.monitor = DivergenceMonitor(settings.monitor, on_serialize=self._serialize_after_divergence)
        self._probes = ProbeDriver(self.monitor)
        self._generator = None  # the engine thread's; read (racily, counters only) by stats()
        self.packed = PackedWeights(settings.packed_weights, note="the model is not loaded yet")

    @property
    def _capacity(self) -> int:
        return self.settings.max_concurrency

    def _decoding(self) -> int:
        return len(self._active)

    def _cancel(self, handle: RequestHandle) -> None:
        # Only the engine thread may touch the batch: it applies cancels between steps.
        self._cancels.put(handle)

    def stats(self) -> dict:
        return {
            "mode": self._mode(),
            "alive": self.alive,
            "deterministic": self.settings.deterministic,
            "serial_decoding": self._serial_reason is not None,
            "serial_reason": self._serial_reason,
            "divergence_monitor": self.monitor.status(),
            "lookup_decoding": self._lookup_stats(),
            "packed_weights": self.packed.as_dict(),
            "admission": {"prefill_batch_size": self.settings.prefill_batch_size,
                          "quiet_ms": self.settings.admission_quiet_s * 1000,
                          "window_max_ms": self.settings.admission_window_max_s * 1000},
            **self._load_stats(prefix_cache=self._cache.stats()),
        }

    def _lookup_stats(self) -> dict:
        stats = getattr(self._generator, "lookup", None)
        if stats is None:
            return {"enabled": False, "draft_tokens": 0}
        return {"enabled": True, "draft_tokens": self._generator.draft_tokens, **stats.as_dict()}

    def _mode(self) -> str:
        if self.settings.deterministic:
            return DETERMINISTIC_MODE
        if self.settings.batch_invariant_context is not None:
            return BATCH_INVARIANT_MODE
        return COMPILED_MODE if self.settings.compiled_step_context is not None else ENGINE_MODE

    # ---- engine-thread side -----------------------------------------------
    def _load(self) -> tuple[Any, Any]:
        from .generator import first_generator

        model, self.tokenizer = self._loader()
        generator, self.settings = first_generator(self._factory, model, self.tokenizer, self.settings)
        self._generator = generator
        # Once, for the process's life: the shim knows these arrays by address, and self.packed
        # keeps them alive (a generator rebuilt after a failed step decodes its own fused weights
        # unpacked).
        self.packed = pack_exact_weights(model, policy=self.settings.packed_weights, extra=fused_weights(generator))
        if self.settings.deterministic:
            self.monitor.inert("decoding is always serial (--deterministic): there is no batch to probe")
        else:  # before any request: the probe's serial reference is decoded alone
            self._probes.compute_reference(generator, self.tokenizer)
        return model, generator

    def _serve(self, loaded: tuple[Any, Any]) -> None:
        self._loop(*loaded)

    def _loop(self, model, generator) -> None:
        last_log = time.monotonic()
        while not self._stopping.is_set():
            idle = not self._active and not self._waiting and not self._probes.running
            self._take_inbox(block=idle)
            if idle and self._waiting:
                self._gather_burst()
            self._apply_cancels(generator)
            self._expire(generator)
            self._admit(generator)
            self._probes.maybe_start(generator, decoding=len(self._active), waiting=len(self._waiting),
                                     room=self._has_room(), serial=self._serial_reason is not None)
            if not self._active and not self._probes.running:
                continue
            step_started = time.perf_counter()
            try:
                _, responses = generator.next()
            except Exception as exc:  # one bad step must not kill the server
                log.exception("engine step failed; failing %d sequences", len(self._active))
                self._counters["step_failures"] += 1
                self._fail_active(f"generation step failed: {exc}")
                self._probes.forget()
                generator = self._generator = self._factory(model, self.tokenizer, self.settings)
                continue
            self._counters["steps"] += 1
            self._deliver(generator, responses)
            if self.settings.planted_slowdown:
                # MLX evaluates asynchronously: without a sync the step's compute
                # would overlap the sleep and the planted cost would mostly vanish.
                from .generator import synchronize
                synchronize()
                time.sleep(self.settings.planted_slowdown * (time.perf_counter() - step_started))
            if time.monotonic() - last_log > self.settings.log_every_s:
                last_log = time.monotonic()
                log.info("batch: %d decoding, %d waiting, %d tokens so far",
                         len(self._active), self._queued, self._counters["generated_tokens"])

    def _take_inbox(self, *, block: bool) -> None:
        try:
            first = self._inbox.get(timeout=0.05) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        self._waiting.append(first)
        while True:
            try:
                self._waiting.append(self._inbox.get_nowait())
            except queue.Empty:
                return

    def _gather_burst(self) -> None:
        """Take the rest of a burst before the first prefill. Clients that open several requests at
        once (parallel agents, a UI's answer and title) reach the inbox a few milliseconds apart; an
        engine that starts on the first alone prefills it by itself while the rest wait, then the
        rest, and on a CPU one prompt alone costs about twice per token what a batch does."""
        quiet = self.settings.admission_quiet_s
        if quiet <= 0:
            return
        deadline = time.monotonic() + self.settings.admission_window_max_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._waiting.append(self._inbox.get(timeout=min(quiet, left)))
            except queue.Empty:
                return

    def _dequeue(self, count: int = 1) -> None:
        with self._lock:
            self._queued -= count

    def _has_room(self) -> bool:
        busy = len(self._active) + self._probes.slots
        if self._serial_reason is not None:
            return busy == 0
        return busy < self.settings.max_concurrency

    def _serialize_after_divergence(self) -> None:
        # Sequences already batched finish where they are; every later one decodes alone.
        self._serial_reason = self._serial_reason or "divergence-monitor"

    def _admit(self, generator) -> None:
        if self._waiting and self._probes.running_alone:
            self._probes.abort(generator)  # an idle-time re-check gives way to a request
        while self._waiting and self._has_room():
            handle = self._waiting.popleft()
            self._dequeue()
            if handle.done:
                continue
            try:
                self._insert(generator, handle)
            except Exception as exc:
                log.exception("admission failed")
                self._counters["errors"] += 1
                self._finish(handle, Finished("error", Usage(len(handle.request.prompt_tokens), 0),
                                              error=f"admission failed: {exc}"))
        self._counters["peak_decoding"] = max(self._counters["peak_decoding"], len(self._active))

    def _insert(self, generator, handle: RequestHandle) -> None:
        req = handle.request
        hit = self._cache.lookup(req.prompt_tokens)
        processors = build_logits_processors(req.sampling, context_size=req.max_tokens)
        if req.logits_processor is not None:
            processors = [*processors, req.logits_processor(req.max_tokens)]
        (uid,) = generator.insert(
            [hit.rest],
            max_tokens=[req.max_tokens],
            caches=[hit.cache],
            all_tokens=[list(req.prompt_tokens[:hit.cached_tokens])],
            samplers=[build_sampler(req.sampling)],
            logits_processors=[processors],
        )
        self._active[uid] = _Sequence(handle, TextStream(self.tokenizer.detokenizer, req.stop),
                                      len(req.prompt_tokens), hit.cached_tokens)
        self._counters["requests"] += 1

    def _apply_cancels(self, generator) -> None:
        while True:
            try:
                handle = self._cancels.get_nowait()
            except queue.Empty:
                return
            for uid, seq in list(self._active.items()):
                if seq.handle is handle:
                    self._drop(generator, uid)
                    self._finish(handle, Finished("cancelled", seq.usage()))
            handle.mark_done()  # a handle still waiting is skipped at admission

    def _expire(self, generator) -> None:
        now = time.monotonic()
        for uid, seq in list(self._active.items()):
            if self._overdue(seq.handle, now):
                self._drop(generator, uid)
                self._counters["timeouts"] += 1
                self._finish(seq.handle, Finished("timeout", seq.usage(),
                                                  error=f"generation exceeded {seq.handle.request.timeout_s:g} s"))
        for handle in [h for h in self._waiting if self._overdue(h, now)]:
            self._waiting.remove(handle)
            self._dequeue()
            self._counters["timeouts"] += 1
            self._finish(handle, Finished("timeout", Usage(len(handle.request.prompt_tokens), 0),
                                          error=f"waited over {handle.request.timeout_s:g} s for a slot"))

    def _drop(self, generator, uid: int) -> None:
        self._active.pop(uid, None)
        try:
            generator.remove([uid])
        except Exception:  # the sequence is gone either way; keep serving the rest
            log.exception("could not remove sequence %d from the batch", uid)

    def _deliver(self, generator, responses) -> None:
        # A lookup step returns several tokens of one sequence: the batch is its sequences.
        batch_size = len({r.uid for r in responses})
        for r in responses:
            if self._probes.owns(r.uid):
                self._probes.deliver(generator, r, batch_size=batch_size)
                continue
            seq = self._active.get(r.uid)
            if seq is None:
                continue
            try:
                self._deliver_one(generator, seq, r)
            except Exception as exc:
                log.exception("delivery failed for sequence %d", r.uid)
                self._counters["errors"] += 1
                self._drop(generator, r.uid)
                self._finish(seq.handle, Finished("error", seq.usage(), error=f"delivery failed: {exc}"))

    def _deliver_one(self, generator, seq: _Sequence, r) -> None:
        seq.generated += 1
        self._counters["generated_tokens"] += 1
        eos = r.finish_reason == "stop"  # mlx-lm's "stop" is a stop token: end of sequence
        if eos:
            ids, text, lps = (), seq.text.finish(), None
        else:
            ids, text = (r.token,), seq.text.add(r.token)
            k = seq.handle.request.logprobs
            lps = None if k is None else (token_logprob(r.logprobs, r.token, k),)
        reason, cache, tokens = None, r.prompt_cache, r.all_tokens
        if seq.text.stopped:
            reason = "stop"
            if r.finish_reason is None:  # the generator would go on: take it out, keeping its cache
                self._active.pop(r.uid, None)
                cache, tokens = generator.remove([r.uid], return_prompt_caches=True).get(r.uid, (None, None))
        elif eos:
            reason = "eos"
        elif r.finish_reason == "length":
            reason = "length"
            text += seq.text.finish()
        events = [StepOutput(ids, text, lps)] if ids or text else []
        if reason is not None:
            self._active.pop(r.uid, None)
            if cache is not None and tokens:
                self._cache.store(list(tokens), cache)
            events.append(Finished(reason, seq.usage(), stop_string=seq.text.stop_string))
            seq.handle.mark_done()
        if events:
            seq.handle.put(*events)

    def _fail_active(self, message: str) -> None:
        for seq in self._active.values():
            self._counters["errors"] += 1
            self._finish(seq.handle, Finished("error", seq.usage(), error=message))
        self._active.clear()

    def _fail_pending(self, message: str) -> None:
        self._fail_active(message)
        waiting = list(self._waiting)
        self._waiting.clear()
        self._fail_queued(message, waiting)
