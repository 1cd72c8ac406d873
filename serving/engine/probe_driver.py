"""Runs the divergence monitor's probe through the engine's own batch generator.

A probe is an extra greedy sequence the engine inserts next to the requests it
serves, never one of theirs: no handle, no text, no prefix cache (a cached prefix
would bring another request's numerics into the comparison). Its tokens go to
the monitor (engine.divergence_monitor), not to a client. Engine thread only.
"""

from __future__ import annotations

import logging
from typing import Any

from .divergence_monitor import DivergenceMonitor, ProbeKind, ProbeRun
from .request import SamplingParams
from .sampling import build_sampler

log = logging.getLogger("mlx_proof.divergence")

# Prefill steps are not counted by max_tokens: leave room for a long probe prompt in chunks.
_REFERENCE_STEP_SLACK = 64


class ProbeDriver:
    def __init__(self, monitor: DivergenceMonitor) -> None:
        self.monitor = monitor
        self.prompt: list[int] = []
        self._run: ProbeRun | None = None
        self._uid: int | None = None

    @property
    def running(self) -> bool:
        return self._run is not None

    @property
    def running_alone(self) -> bool:
        """A serial re-check is decoding: it must give way as soon as a request arrives."""
        return self._run is not None and self._run.kind != "batched"

    @property
    def slots(self) -> int:
        return 1 if self._run is not None else 0

    def owns(self, uid: int) -> bool:
        return self._run is not None and uid == self._uid

    # ---- starting -------------------------------------------------------------
    def compute_reference(self, generator, tokenizer) -> None:
        """Decode the probe alone, before the engine takes any request (startup)."""
        if not self.monitor.settings.enabled:
            return
        try:
            self.prompt = list(tokenizer.encode(self.monitor.settings.prompt))
            run = self._start(generator, "reference")
            for _ in range(self.monitor.settings.max_tokens + _REFERENCE_STEP_SLACK):
                _, responses = generator.next()
                for r in responses:  # alone: a lookup step's several tokens are still one sequence
                    self.deliver(generator, r, batch_size=1)
                if self._run is None:
                    break
            else:
                raise RuntimeError("the reference decode did not finish")
            self.monitor.set_reference(run)
        except Exception as exc:  # the monitor is lost, the server is not
            log.exception("divergence monitor: reference decode failed")
            self.abort(generator)
            self.monitor.reference_failed(f"{type(exc).__name__}: {exc}")

    def maybe_start(self, generator, *, decoding: int, waiting: int, room: bool, serial: bool) -> None:
        """Start a probe when one is due and meaningful.

        A batched probe needs requests decoding to be batched with (and a free slot);
        under serial decoding there is no batch to probe, and a probe would itself be
        a second sequence in the batch. A re-check runs only on an idle engine.
        """
        if self._run is not None:
            return
        if self.monitor.batched_due() and decoding > 0 and room and not serial:
            self._start(generator, "batched")
        elif self.monitor.recheck_due() and decoding == 0 and waiting == 0:
            self._start(generator, "recheck")

    def _start(self, generator, kind: ProbeKind) -> ProbeRun:
        (uid,) = generator.insert([list(self.prompt)], max_tokens=[self.monitor.settings.max_tokens],
                                  samplers=[build_sampler(SamplingParams())])
        self._run, self._uid = self.monitor.new_run(kind), uid
        return self._run

    # ---- running ----------------------------------------------------------------
    def deliver(self, generator, response: Any, *, batch_size: int) -> None:
        run = self._run
        settled = run.observe(response.token, response.logprobs, batch_size=batch_size)
        if response.finish_reason is not None:  # the generator has let it go already
            self._end()
        elif settled:  # diverged: the rest of the decode would tell nothing more
            self._remove(generator)
            self._end()

    def _end(self) -> None:
        run, self._run, self._uid = self._run, None, None
        if run.kind != "reference":
            self.monitor.record(run)

    def abort(self, generator) -> None:
        """Take a probe out of the batch unfinished (a request needs the engine alone)."""
        if self._run is None:
            return
        self._remove(generator)
        run, self._run, self._uid = self._run, None, None
        self.monitor.aborted(run)

    def forget(self) -> None:
        """The generator was replaced after a failed step; its sequences are gone."""
        if self._run is not None:
            run, self._run, self._uid = self._run, None, None
            self.monitor.aborted(run)

    def _remove(self, generator) -> None:
        try:
            generator.remove([self._uid])
        except Exception:
            log.exception("could not remove the divergence probe from the batch")
