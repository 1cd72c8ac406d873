"""What HTTP threads hand the engine, and what the engine hands back."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str
    token_count: int  # tokens generated so far, including this delta's


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


Event = TextDelta | Finished


class RequestHandle:
    """The HTTP thread's side of one generation: read events, or cancel."""

    def __init__(self, request: GenerationRequest, cancel: "callable") -> None:
        self.request = request
        self.events: "queue.Queue[Event]" = queue.Queue()
        self.created = time.monotonic()
        self._cancel = cancel
        self._done = threading.Event()

    def cancel(self) -> None:
        if not self._done.is_set():
            self._cancel(self)

    def mark_done(self) -> None:
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def iter_events(self, *, poll_s: float = 0.25, is_disconnected=lambda: False):
        """Yield events until Finished; cancel if the client goes away meanwhile."""
        while True:
            try:
                event = self.events.get(timeout=poll_s)
            except queue.Empty:
                if is_disconnected():
                    self.cancel()
                    return
                continue
            yield event
            if isinstance(event, Finished):
                return
