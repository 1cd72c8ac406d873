"""The neutral contract between every API dialect and the engine.

A dialect adapter builds a GenerationRequest; the engine answers with a stream
of StepOutput events and one Finished event. Nothing here knows OpenAI or
Anthropic exist.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

# eos: the model ended its turn; stop: a stop string matched (Finished.stop_string
# says which); length: max_tokens; timeout: the request's time limit ran out.
# tool_calls: set by the API layer, never the engine, when the text held a tool call.
FinishReason = Literal["eos", "stop", "length", "cancelled", "error", "timeout", "tool_calls"]


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


# Made once per sequence on the engine thread, given the sequence's max_tokens (so a grammar
# can close its output before the budget runs out); returns an mlx-lm logits processor
# (tokens, logits) -> logits. The slot a grammar constraint fills.
LogitsProcessorFactory = Callable[[int], Callable[[Any, Any], Any]]


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()
    # None: no logprobs; 0: the chosen token's only; k > 0: also the top k.
    logprobs: int | None = None
    logits_processor: LogitsProcessorFactory | None = None
    timeout_s: float | None = None
    # Model inputs beside the tokens, made by the API layer: a vision model's pixel arrays
    # (serving.vision.prompt.ImageArrays). Only a vision engine reads it.
    media: Any = None


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class StepOutput:
    """One engine step's output for one sequence.

    `text` is what became safe to show (it may be empty while a possible stop
    string or half a UTF-8 character is held back); `token_ids` are the tokens
    generated this step. An end-of-sequence token is counted in usage but is
    neither shown nor listed.
    """

    token_ids: tuple[int, ...]
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # Of completion_tokens, those spent reasoning; None when no reasoning parser read the output.
    reasoning_tokens: int | None = None


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    usage: Usage
    stop_string: str | None = None
    error: str | None = None


Event = StepOutput | Finished


class EngineBusy(Exception):
    """The waiting queue is full; the client should retry later."""


class EngineDown(Exception):
    """The engine thread is not running."""


class RequestHandle:
    """The HTTP thread's side of one generation: read events, or cancel.

    The engine puts each step's events as one list, so a reader wakes once per
    step however many events the step made.
    """

    def __init__(self, request: GenerationRequest, cancel: Callable[["RequestHandle"], None],
                 is_alive: Callable[[], bool] = lambda: True) -> None:
        self.request = request
        self.events: "queue.Queue[list[Event]]" = queue.Queue()
        self.created = time.monotonic()
        self._cancel = cancel
        self._is_alive = is_alive
        self._done = threading.Event()

    def put(self, *events: Event) -> None:
        self.events.put(list(events))

    def cancel(self) -> None:
        if not self._done.is_set():
            self._cancel(self)

    def mark_done(self) -> None:
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def iter_events(self, *, poll_s: float = 0.2, is_disconnected=lambda: False,
                    idle_s: float | None = None, idle: object = None):
        """Yield events until Finished; cancel if the client goes away meanwhile.

        With idle_s, `idle` is yielded whenever that long passes without an
        event (a stream's keep-alive). A dead engine ends the stream within one
        poll with an error event, so no reader can wait forever.
        """
        quiet_since = time.monotonic()
        while True:
            try:
                batch = self.events.get(timeout=poll_s)
            except queue.Empty:
                if idle_s is not None and time.monotonic() - quiet_since >= idle_s:
                    quiet_since = time.monotonic()
                    yield idle
                if is_disconnected():
                    self.cancel()
                    return
                if not self._is_alive() and self.events.empty():
                    yield Finished("error", Usage(len(self.request.prompt_tokens), 0),
                                   error="the engine stopped")
                    return
                continue
            quiet_since = time.monotonic()
            for event in batch:
                yield event
                if isinstance(event, Finished):
                    return
