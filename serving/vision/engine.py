"""The engine for a vision-language model: mlx-vlm generation, one request at a time.

It keeps the text engine's contract (engine.loop.Engine): `submit` returns a
RequestHandle that yields StepOutput events and one Finished with usage;
`start`, `stop`, `alive`, `stats` and `tokenizer` mean the same. So every
dialect's encoder, the tool-call parser and streaming work unchanged, for
text-only requests too.

mlx-vlm has no continuous batching for mixed image prompts that our engine
could drive, so one worker thread owns the model and serves a bounded queue
in order. Between tokens it checks cancellation and the request's time limit;
stop strings, held-back text and end of sequence go through the same
TextStream as the text engine. A failure fails only the request it hit.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ..engine.logprobs import token_logprob
from ..engine.loop import EngineSettings
from ..engine.queued_engine import QueuedEngine
from ..engine.request import Event, Finished, GenerationRequest, RequestHandle, StepOutput, Usage
from ..engine.text_stream import TextStream

log = logging.getLogger("mlx_proof.vision")

ENGINE_MODE = "vision-serial"

# (model, request, settings) -> an iterator of (token id, log-probabilities over the vocabulary)
Steps = Callable[[Any, GenerationRequest, EngineSettings], Iterator[tuple[int, Any]]]
# () -> (model, tokenizer (mlx-lm's TokenizerWrapper contract), VisionPrompter)
Loader = Callable[[], tuple[Any, Any, Any]]


def mlx_vlm_steps(model, request: GenerationRequest, settings: EngineSettings):
    """mlx-vlm's generate_step over the prepared tokens and pixel arrays, with our sampler and processors."""
    import mlx.core as mx
    from mlx_vlm.generate import generate_step

    from ..engine.sampling import build_logits_processors, build_sampler

    processors = build_logits_processors(request.sampling, context_size=request.max_tokens)
    if request.logits_processor is not None:
        processors = [*processors, request.logits_processor(request.max_tokens)]
    media = request.media
    pixel_values = mx.array(media.pixel_values) if media is not None else None
    extra = {k: mx.array(v) for k, v in media.extra.items()} if media is not None else {}
    return generate_step(mx.array([request.prompt_tokens]), model, pixel_values, None,
                         max_tokens=request.max_tokens, temperature=request.sampling.temperature,
                         sampler=build_sampler(request.sampling), logits_processors=processors,
                         prefill_step_size=settings.prefill_step_size, **extra)


def _eos_ids(folder: Path) -> list[int]:
    ids: list[int] = []
    for name in ("config.json", "generation_config.json"):
        try:
            value = json.loads((folder / name).read_text()).get("eos_token_id")
        except (OSError, ValueError):
            continue
        ids += value if isinstance(value, list) else [value] if isinstance(value, int) else []
    return list(dict.fromkeys(ids))


def hub_offline() -> None:
    """Make sure no loader reaches for a model hub: the folder is local and complete. The variable alone
    is not enough once huggingface_hub is imported (it reads it at import), so its flag is set too."""
    import sys

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def load_vision_model(folder: Path) -> tuple[Any, Any, Any]:
    """The model and processor through mlx-vlm; the tokenizer through mlx-lm, as the text path has it,
    so templates, tool-parser choice and streaming detokenization are the same."""
    hub_offline()
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from mlx_vlm import load

    from .prompt import VisionPrompter, image_token_of

    folder = Path(folder)
    model, processor = load(str(folder))
    tokenizer = load_tokenizer(folder, eos_token_ids=_eos_ids(folder) or None)
    token_id, token = image_token_of(json.loads((folder / "config.json").read_text()), processor)
    return model, tokenizer, VisionPrompter(processor.image_processor, image_token_id=token_id, image_token=token)


class VisionEngine(QueuedEngine):
    LOAD_TIMEOUT = "the vision engine did not load its model in time"
    DIED = "vision engine thread died"
    _capacity = 1  # one request at a time: mlx-vlm has no batching our engine could drive

    def __init__(self, loader: Loader, settings: EngineSettings, *, steps: Steps = mlx_vlm_steps) -> None:
        super().__init__(loader, settings, name="mlx-vision-engine", log=log, counters=("cancelled",))
        self._steps = steps
        self._cancelled: set[int] = set()  # ids of handles whose client went away; guarded by _lock
        self._current: RequestHandle | None = None
        self.model = None
        self.vision = None

    def _decoding(self) -> int:
        return 0 if self._current is None else 1

    def _cancel(self, handle: RequestHandle) -> None:
        with self._lock:
            self._cancelled.add(id(handle))

    def stats(self) -> dict:
        return {
            "mode": ENGINE_MODE,
            "alive": self.alive,
            "vision": True,
            **self._load_stats(prefix_cache={"enabled": False, "max_bytes": 0, "bytes": 0, "entries": 0,
                                             "lookups": 0, "hits": 0, "hit_tokens": 0, "miss_tokens": 0}),
        }

    # ---- worker side --------------------------------------------------------
    def _load(self) -> None:
        self.model, self.tokenizer, self.vision = self._loader()

    def _serve(self, loaded: None) -> None:
        while not self._stopping.is_set():
            try:
                handle = self._inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._lock:
                self._queued -= 1
                self._current = handle
            try:
                self._generate(handle)
            finally:
                with self._lock:
                    self._current = None
                    self._cancelled.discard(id(handle))

    def _is_cancelled(self, handle: RequestHandle) -> bool:
        with self._lock:
            return id(handle) in self._cancelled

    def _late(self, handle: RequestHandle) -> bool:
        return self._overdue(handle, time.monotonic())

    def _generate(self, handle: RequestHandle) -> None:
        req = handle.request
        prompt_len = len(req.prompt_tokens)
        if self._is_cancelled(handle):
            self._finish(handle, Finished("cancelled", Usage(prompt_len, 0)))
            return
        if self._late(handle):
            self._counters["timeouts"] += 1
            self._finish(handle, Finished("timeout", Usage(prompt_len, 0),
                                          error=f"waited over {req.timeout_s:g} s for the model"))
            return
        self._counters["requests"] += 1
        self._counters["peak_decoding"] = 1
        generated = 0
        steps = None
        try:
            text = TextStream(self.tokenizer.detokenizer, req.stop)
            eos = set(self.tokenizer.eos_token_ids)
            steps = self._steps(self.model, req, self.settings)
            for token, logprobs in steps:
                token = int(token)
                self._counters["steps"] += 1
                if self._is_cancelled(handle):
                    self._finish(handle, Finished("cancelled", Usage(prompt_len, generated)))
                    self._counters["cancelled"] += 1
                    return
                if self._late(handle):
                    self._counters["timeouts"] += 1
                    self._finish(handle, Finished("timeout", Usage(prompt_len, generated),
                                                  error=f"generation exceeded {req.timeout_s:g} s"))
                    return
                generated += 1
                self._counters["generated_tokens"] += 1
                events = self._events(text, token, logprobs, req, eos=token in eos,
                                      last=generated >= req.max_tokens, usage=Usage(prompt_len, generated))
                handle.put(*events)
                if isinstance(events[-1], Finished):
                    handle.mark_done()
                    return
            # The steps ran out before max_tokens: the model could not go on.
            self._finish(handle, Finished("length", Usage(prompt_len, generated)))
        except Exception as exc:  # one bad request must not stop the server
            log.exception("vision generation failed")
            self._counters["errors"] += 1
            self._finish(handle, Finished("error", Usage(prompt_len, generated), error=f"generation failed: {exc}"))
        finally:
            if steps is not None and hasattr(steps, "close"):
                steps.close()

    @staticmethod
    def _events(text: TextStream, token: int, logprobs, req: GenerationRequest, *, eos: bool, last: bool,
                usage: Usage) -> list[Event]:
        """One token's events, as the text engine makes them: the end-of-sequence token is counted
        but neither shown nor listed; a stop string or the token budget ends the sequence."""
        if eos:
            tail = text.finish()
            return [*([StepOutput((), tail)] if tail else []), Finished("eos", usage)]
        shown = text.add(token)
        lps = None if req.logprobs is None else (token_logprob(logprobs, token, req.logprobs),)
        if text.stopped:
            return [StepOutput((token,), shown, lps), Finished("stop", usage, stop_string=text.stop_string)]
        if last:
            return [StepOutput((token,), shown + text.finish(), lps), Finished("length", usage)]
        return [StepOutput((token,), shown, lps)]
