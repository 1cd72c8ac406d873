"""The batch-divergence monitor's state: a serial reference, probe comparisons, a status.

Continuous batching changes the shapes the kernels see, so a greedy decode can
change with what else is in the batch. The monitor decodes one fixed prompt
greedily, alone, once at startup (the serial reference). Afterwards, once per
interval and only while real traffic is decoding, the engine decodes the same
prompt inside the running batch and the two are compared token by token: the
first divergent index, and the logprob margin there (a near-tie that flipped, or
a real change). After a divergence the reference is decoded alone again at the
next idle moment, so that a divergence is blamed on batching only while serial
decoding still reproduces the reference.

Pure bookkeeping: no MLX and no threads. The engine thread drives it
(engine.probe_driver); `status()` is read from HTTP threads as a snapshot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Literal

log = logging.getLogger("mlx_proof.divergence")

MonitorAction = Literal["off", "warn", "serialize"]
ProbeKind = Literal["reference", "batched", "recheck"]

# A prompt whose continuation runs for a while without an early end of turn.
DEFAULT_PROBE_PROMPT = ("The history of the printing press begins in the fifteenth century, when "
                        "Johannes Gutenberg combined movable metal type with an oil-based ink and")


@dataclass(frozen=True)
class MonitorSettings:
    action: MonitorAction = "off"
    interval_s: float = 60.0
    prompt: str = DEFAULT_PROBE_PROMPT
    max_tokens: int = 32

    @property
    def enabled(self) -> bool:
        return self.action != "off"


def logprob_of(logprobs: Any, token: int) -> float:
    """One entry of a step's log-distribution (an mx.array or anything indexable)."""
    value = logprobs[token]
    return float(value.item() if hasattr(value, "item") else value)


@dataclass(frozen=True)
class Reference:
    """The probe decoded alone: its token ids (an end-of-sequence id included) and the
    log-probability of each."""

    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]


@dataclass
class ProbeRun:
    """One decode of the probe prompt, compared with the reference as its tokens arrive."""

    kind: ProbeKind
    reference: Reference | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    first_divergence: int | None = None
    margin: float | None = None  # chosen minus reference token, in this run's distribution
    logprob_delta: float | None = None  # |change| of the reference token's logprob there
    max_logprob_delta: float = 0.0  # over the steps whose tokens still matched
    batch_sizes: list[int] = field(default_factory=list)

    def observe(self, token: int, logprobs: Any, *, batch_size: int) -> bool:
        """Record one step; True once the comparison is settled (a divergence was seen)."""
        i = len(self.tokens)
        chosen = logprob_of(logprobs, token)
        self.tokens.append(token)
        self.logprobs.append(chosen)
        self.batch_sizes.append(batch_size)
        ref = self.reference
        if ref is None:
            return False
        if i >= len(ref.tokens):  # the reference ended (EOS) and this run did not
            self.first_divergence = i
            return True
        if token == ref.tokens[i]:
            self.max_logprob_delta = max(self.max_logprob_delta, abs(chosen - ref.logprobs[i]))
            return False
        self.first_divergence = i
        ref_token_here = logprob_of(logprobs, ref.tokens[i])
        self.margin = chosen - ref_token_here
        self.logprob_delta = abs(ref_token_here - ref.logprobs[i])
        return True

    def ended(self) -> None:
        """The decode stopped (EOS or length) without an observed divergence."""
        ref = self.reference
        if ref is not None and self.first_divergence is None and len(self.tokens) < len(ref.tokens):
            self.first_divergence = len(self.tokens)  # this run ended early: EOS where the reference went on

    @property
    def co_batched(self) -> bool:
        """Some step of it decoded beside other sequences (else it proves nothing about batching)."""
        return any(n > 1 for n in self.batch_sizes)

    def summary(self) -> dict:
        return {
            "kind": self.kind,
            "matched": self.first_divergence is None,
            "compared_tokens": len(self.tokens),
            "first_divergent_index": self.first_divergence,
            "margin": _round(self.margin),
            "logprob_delta": _round(self.logprob_delta),
            "max_logprob_delta": _round(self.max_logprob_delta),
            "max_batch_size": max(self.batch_sizes, default=0),
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DivergenceMonitor:
    """Status and counters. `on_serialize` is called (engine thread) at the first divergence when
    the action is serialize."""

    def __init__(self, settings: MonitorSettings, *, on_serialize: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._on_serialize = on_serialize
        self._clock = clock
        self._wall = wall
        self.reference: Reference | None = None
        self.reference_at: float | None = None
        self.error: str | None = None
        self.reason: str | None = None  # why the status is a warning
        self.probes = 0  # conclusive batched probes
        self.divergences = 0
        self.inconclusive = 0  # batched probes that ended up decoding alone, or were aborted
        self.rechecks = 0
        self.recheck_mismatches = 0
        self.recheck_wanted = False
        self.last_probe_at: float | None = None
        self.last_probe: dict | None = None
        self.last_divergence: dict | None = None
        self.serialized = False
        self._next_due = clock() + settings.interval_s

    # ---- engine-thread side -------------------------------------------------
    def set_reference(self, run: ProbeRun) -> None:
        self.reference = Reference(tuple(run.tokens), tuple(run.logprobs))
        self.reference_at = self._wall()
        log.info("divergence monitor: serial reference of %d tokens computed", len(run.tokens))

    def reference_failed(self, message: str) -> None:
        self.error = message
        log.error("divergence monitor: no serial reference (%s); probes are off", message)

    def inert(self, why: str) -> None:
        if self.settings.enabled:
            self.error = why
            log.info("divergence monitor: no probes, %s", why)

    @property
    def ready(self) -> bool:
        return self.settings.enabled and self.reference is not None

    def batched_due(self) -> bool:
        return self.ready and self._clock() >= self._next_due

    def recheck_due(self) -> bool:
        return self.ready and self.recheck_wanted

    def new_run(self, kind: ProbeKind) -> ProbeRun:
        return ProbeRun(kind, self.reference)

    def record(self, run: ProbeRun) -> None:
        """A probe ended; fold it into the status (and serialise, if so configured)."""
        run.ended()
        if run.kind == "batched":
            self._next_due = self._clock() + self.settings.interval_s
            if not run.co_batched:
                self.inconclusive += 1
                return
            self._batched(run)
        elif run.kind == "recheck":
            self._recheck(run)

    def aborted(self, run: ProbeRun) -> None:
        if run.kind == "batched":
            self.inconclusive += 1
            self._next_due = self._clock() + self.settings.interval_s

    def _batched(self, run: ProbeRun) -> None:
        self.probes += 1
        self.last_probe_at = self._wall()
        self.last_probe = {**run.summary(), "at": _iso(self.last_probe_at)}
        if run.first_divergence is None:
            return
        self.divergences += 1
        self.last_divergence = self.last_probe
        self.reason = "batch-divergence"
        self.recheck_wanted = True
        log.warning("divergence monitor: greedy decoding inside a batch of up to %d diverged from serial "
                    "decoding at token %d (margin %s, logprob delta %s); action %s",
                    max(run.batch_sizes), run.first_divergence, self.last_probe["margin"],
                    self.last_probe["logprob_delta"], self.settings.action)
        if self.settings.action == "serialize" and not self.serialized:
            self.serialized = True
            log.warning("divergence monitor: serialising decoding (one sequence at a time) until restart")
            self._on_serialize()

    def _recheck(self, run: ProbeRun) -> None:
        self.rechecks += 1
        self.recheck_wanted = False
        if run.first_divergence is not None:
            self.recheck_mismatches += 1
            self.reason = "serial-nondeterminism"
            log.warning("divergence monitor: the probe decoded ALONE no longer matches the serial reference "
                        "(token %d): decoding is not reproducible even without batching, so serialising "
                        "cannot make it so", run.first_divergence)

    # ---- any thread ---------------------------------------------------------
    @property
    def state(self) -> str:
        if not self.settings.enabled:
            return "off"
        if self.divergences or self.recheck_mismatches:
            return "warning"
        return "ok" if self.probes else "unknown"

    def status(self) -> dict:
        s = self.settings
        return {
            "status": self.state,
            "action": s.action,
            "reason": self.reason,
            "serialized": self.serialized,
            "interval_s": s.interval_s,
            "probe_max_tokens": s.max_tokens,
            "probes": self.probes,
            "divergences": self.divergences,
            "inconclusive": self.inconclusive,
            "last_probe_at": _iso(self.last_probe_at),
            "last_probe_unix": self.last_probe_at,
            "last_probe": self.last_probe,
            "last_divergence": self.last_divergence,
            "first_divergent_index": (self.last_divergence or {}).get("first_divergent_index"),
            "margin": (self.last_divergence or {}).get("margin"),
            "reference": None if self.reference is None else {
                "tokens": list(self.reference.tokens), "computed_at": _iso(self.reference_at),
                "rechecks": self.rechecks, "mismatches": self.recheck_mismatches},
            "error": self.error,  # why there are no probes (no reference), if so
        }


def monitor_settings(config: Any) -> MonitorSettings:
    """From ServerConfig's divergence_* fields."""
    return MonitorSettings(action=config.divergence_monitor, interval_s=config.divergence_probe_interval_s,
                           prompt=config.divergence_probe_prompt or DEFAULT_PROBE_PROMPT,
                           max_tokens=config.divergence_probe_tokens)
