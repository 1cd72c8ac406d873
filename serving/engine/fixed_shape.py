"""Batch-invariant decoding: every decode step has one shape, whatever the batch holds.

Why results move with the batch under mlx-lm's BatchGenerator: kernels choose tiles, GEMV
against GEMM, split reductions and attention passes from the shapes they see, and those shapes
change with the number of rows decoding and with the padded key length of the longest
neighbour. So the same sequence is summed in a different order alone and batched.

Here nothing a kernel sees depends on the neighbours:
- every decode step runs exactly `rows` rows (idle slots decode a dummy token whose result
  is dropped) over a KV buffer of exactly `capacity` positions per slot, masked per row at the
  row's own position. Every GEMM, norm, softmax and attention call has one shape for the
  server's life, and none of them reduces across rows, so a row's numbers are a function of
  its own tokens only;
- a prompt is prefilled alone (batch 1, fixed chunks) into an ordinary cache and then copied
  into its slot, so prefill never sees a neighbour either. Its last token enters through the
  decode step, like every later token;
- because the shape never changes, the step compiles once (mx.compile), with the cache passed
  in and returned as explicit state: a closure over a mutated cache compiles to wrong tokens.

The cost: attention reads the whole buffer each step, and idle rows cost GEMM rows. The
serial reference is the same code with one slot busy, so "alone" and "batched" are the same
computation. The generator speaks BatchGenerator's interface (insert / next / remove), so the
engine drives it unchanged.

`BucketedGenerator` (serving/engine/bucketed_step.py, `--decode-step compiled`) is this
generator with the shapes following the load: it gives up invariance for speed.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable

import mlx.core as mx

from .slot_cache import FixedShapeUnsupported, SlotCache


@dataclass
class _Slot:
    uid: int
    prompt: list[int]
    max_tokens: int
    sampler: Callable | None  # None: greedy, picked inside the compiled step
    processors: list
    enqueued: int = 0  # inputs handed to the device: prompt[-1], then each generated token
    generated: list[int] = field(default_factory=list)
    prefix: list | None = None  # a cached prefix's KV (one mlx-lm cache per layer), until prefilled
    cached: int = 0  # how many leading prompt tokens that prefix holds

    @property
    def position(self) -> int:
        """Where the next input's KV goes."""
        return len(self.prompt) - 1 + self.enqueued

    @property
    def plain(self) -> bool:
        """Greedy without processors: its next input can stay on the device."""
        return self.sampler is None and not self.processors

    def context(self) -> mx.array:
        return mx.array(self.prompt + self.generated, dtype=mx.int32)


@dataclass
class Response:  # the fields the engine reads from BatchGenerator's responses
    uid: int
    token: int
    logprobs: mx.array
    finish_reason: str | None
    prompt_cache: Any = None
    all_tokens: list[int] | None = None


@dataclass
class _Step:
    """One decode step handed to the device: which slot each busy row served, and its outputs."""
    rows: list[tuple[int, _Slot]]
    greedy: mx.array
    logits: mx.array
    logprobs: mx.array
    picks: list[mx.array] | None = None  # host-side picks (samplers or processors), per row
    row_logprobs: list[mx.array] | None = None  # what each of those picks was drawn from


class FixedShapeGenerator:
    # What a prompt that does not fit is told it overflowed.
    context_name = "batch-invariant context"
    context_flag = " (--batch-invariant-context)"
    # Whether insert() takes a cached prefix: not here, where a prefix computed in another
    # request's prefill chunks could change a sequence's numbers.
    takes_cached_prefix = False
    # Whether a finished (or removed) sequence hands its KV back for the prefix cache.
    keep_prompt_caches = False

    def __init__(self, model: Any, *, stop_tokens: set[int], rows: int, capacity: int,
                 prefill_step_size: int, prefill_per_step: int) -> None:
        from mlx_lm.models.cache import KVCache, make_prompt_cache

        caches = make_prompt_cache(model)
        kinds = sorted({type(c).__name__ for c in caches if type(c) is not KVCache})
        if kinds:
            raise FixedShapeUnsupported(
                f"batch-invariant decoding lays every layer's KV out in fixed slots; this model's "
                f"layers use {', '.join(kinds)}, which it cannot")
        self._model = model
        self._make_cache = lambda: make_prompt_cache(model)
        # The largest shapes; rows and capacity are the current ones (equal here; see the subclass).
        self.max_rows, self.max_capacity = rows, capacity
        self.rows, self.capacity = self._initial_shape()
        self._stop = set(stop_tokens)
        self._prefill_step = prefill_step_size
        self._prefill_per_step = prefill_per_step
        self._dtype = param_dtype(model)
        self._geometry = [_kv_geometry(model, layer) for layer in range(len(caches))]
        self._kv: list[mx.array] = []
        for heads, head_dim in self._geometry:
            shape = (self.rows, heads, self.capacity, head_dim)
            self._kv += [mx.zeros(shape, dtype=self._dtype), mx.zeros(shape, dtype=self._dtype)]
        mx.eval(self._kv)
        self._step = mx.compile(self._forward)
        self._slots: list[_Slot | None] = [None] * self.rows
        self._pending: collections.deque[_Slot] = collections.deque()
        self._inflight: _Step | None = None
        self._uid = 0

    # ---- BatchGenerator's interface ------------------------------------------------
    def insert(self, prompts, max_tokens=None, caches=None, all_tokens=None, samplers=None,
               logits_processors=None):
        if caches and any(c is not None for c in caches) and not self.takes_cached_prefix:
            raise ValueError("batch-invariant decoding prefills every prompt afresh: no cached prefix")
        n = len(prompts)
        max_tokens = max_tokens or [None] * n
        samplers = samplers or [None] * n
        logits_processors = logits_processors or [None] * n
        caches = caches or [None] * n
        all_tokens = all_tokens or [None] * n
        uids = []
        for i, prompt in enumerate(prompts):
            # A cached prefix's tokens come first; only the prompt's rest is prefilled.
            cached = list(all_tokens[i] or []) if caches[i] is not None else []
            prompt = cached + list(prompt)
            if not prompt:
                raise ValueError("an empty prompt has no token to decode from")
            if len(prompt) >= self.max_capacity:
                raise ValueError(f"the prompt's {len(prompt)} tokens leave no room in the {self.context_name} "
                                 f"of {self.max_capacity} tokens{self.context_flag}")
            room = self.max_capacity - len(prompt)
            sampler = None if _is_greedy(samplers[i]) else samplers[i]
            slot = _Slot(self._uid, prompt, min(max_tokens[i] or room, room), sampler,
                         list(logits_processors[i] or []), prefix=caches[i], cached=len(cached))
            self._pending.append(slot)
            uids.append(self._uid)
            self._uid += 1
        return uids

    def remove(self, uids, return_prompt_caches: bool = False) -> dict:
        gone = set(uids)
        self._pending = collections.deque(s for s in self._pending if s.uid not in gone)
        kept = {}
        for i, slot in enumerate(self._slots):
            if slot is not None and slot.uid in gone:
                if return_prompt_caches:
                    kept[slot.uid] = self._prompt_cache(i, slot)
                self._slots[i] = None
        return {uid: kept.get(uid, (None, None)) for uid in uids} if return_prompt_caches else {}

    def next(self) -> tuple[list, list[Response]]:
        """Read one step's tokens; while the device computes the step after it, when it can.

        Sequences that are greedy without processors never need the host between steps, so
        step t+1 is queued from step t's tokens still on the device before step t is read,
        as mlx-lm does. A sequence that finished in step t (an end token) was decoded one
        step too far in t+1; that row's result is dropped. A sampler or processor needs the
        host, so a batch holding one runs step by step.
        """
        if self._inflight is None:
            self._between_steps()
        self._admit()
        if self._inflight is None:
            responses = self._lookup_step()
            if responses is not None:
                return [], responses
            self._inflight = self._launch(previous=None)
            if self._inflight is None:
                return [], []
        step = self._inflight
        pipelined = (all(s.plain for _, s in step.rows) and all(s is None or s.plain for s in self._slots)
                     and self._may_pipeline())
        self._inflight = self._launch(previous=step) if pipelined else None
        return [], self._read(step)

    # ---- hooks the bucketed generator overrides ---------------------------------------
    def _initial_shape(self) -> tuple[int, int]:
        return self.max_rows, self.max_capacity

    def _between_steps(self) -> None:
        """Called with no step in flight, before admitting new sequences."""

    def _may_pipeline(self) -> bool:
        return True

    def _lookup_step(self) -> list[Response] | None:
        """Several tokens of one sequence in one step, or None for a plain step (here: always)."""
        return None

    def _fit_capacity(self, needed: int) -> None:
        """The buffer never changes here; insert() refuses a prompt that cannot fit."""

    def _grow_rows(self) -> bool:
        """More rows when every slot is busy: never, here."""
        return False

    def _logits(self, tokens: mx.array, caches: list[SlotCache], mask: mx.array) -> mx.array:
        """rows x vocab for one token per row; rows x n x vocab for rows x n tokens (a verifying
        forward). The model's own forward, so the invariant numbers are the model's numbers."""
        if tokens.ndim == 2:
            return self._model(tokens, cache=caches)
        return self._model(tokens[:, None], cache=caches)[:, -1, :]

    # ---- inside ----------------------------------------------------------------------
    def _forward(self, tokens: mx.array, positions: mx.array, *kv: mx.array):
        # The KV length is read from the buffer, not from self: each bucket traces its own graph.
        keep = mx.arange(kv[0].shape[2])[None, :] <= positions[:, None]
        mask = keep[:, None, None, :]
        caches = [SlotCache(kv[j], kv[j + 1], positions, mask) for j in range(0, len(kv), 2)]
        logits = self._logits(tokens, caches, mask).astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        out = [logits, logprobs, mx.argmax(logprobs, axis=-1).astype(mx.int32)]
        for c in caches:
            out += [c.keys, c.values]
        return out

    def _launch(self, previous: _Step | None) -> _Step | None:
        """Queue one decode step for every slot with tokens left to decode."""
        rows = [(i, s) for i, s in enumerate(self._slots) if s is not None and s.enqueued < s.max_tokens]
        if not rows:
            return None
        self._fit_capacity(max(s.position for _, s in rows) + 1)
        host = [0] * self.rows
        from_host = [True] * self.rows
        positions = [0] * self.rows
        on_device = set() if previous is None else {id(p) for _, p in previous.rows}
        for i, s in rows:
            positions[i] = s.position
            if s.enqueued == 0:
                host[i] = s.prompt[-1]
            elif id(s) in on_device:
                from_host[i] = False  # last step's greedy token, still on the device
            else:
                host[i] = s.generated[-1]
            s.enqueued += 1
        tokens = mx.array(host, dtype=mx.int32)
        if previous is not None and not all(from_host):
            last = previous.greedy
            if last.shape[0] < self.rows:  # the rows grew since: new rows come from the host
                last = mx.concatenate([last, mx.zeros((self.rows - last.shape[0],), dtype=last.dtype)])
            tokens = mx.where(mx.array(from_host), tokens, last)
        logits, logprobs, greedy, *self._kv = self._step(tokens, mx.array(positions, dtype=mx.int32), *self._kv)
        step = _Step(rows, greedy, logits, logprobs)
        if not all(s.plain for _, s in rows):
            step.picks, step.row_logprobs = zip(*(self._pick(s, i, step) for i, s in rows))
        mx.async_eval(greedy, logprobs, step.picks or [], self._kv)
        return step

    def _pick(self, slot: _Slot, row: int, step: _Step) -> tuple[mx.array, mx.array]:
        if slot.plain:
            return step.greedy[row:row + 1], step.logprobs[row]
        lp = step.logprobs[row:row + 1]
        if slot.processors:  # processors work on raw logits, as in mlx-lm
            logits = step.logits[row:row + 1]
            context = slot.context()
            for processor in slot.processors:
                logits = processor(context, logits)
            lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return (slot.sampler or _greedy)(lp), lp[0]

    def _read(self, step: _Step) -> list[Response]:
        if step.picks is None:  # every row greedy: one read of the step's argmax, by slot index
            greedy = step.greedy.tolist()
            picks = [(greedy[i], step.logprobs[i]) for i, _ in step.rows]
        else:
            picks = [(int(p.item()), lp) for p, lp in zip(step.picks, step.row_logprobs)]
        return [self._advance(i, slot, token, row) for (i, slot), (token, row) in zip(step.rows, picks)
                if self._slots[i] is slot]  # else removed, or finished a step earlier: the row is dropped

    def _admit(self) -> None:
        admitted = 0
        while self._pending and admitted < self._prefill_per_step and (None in self._slots or self._grow_rows()):
            slot = self._pending.popleft()
            index = self._slots.index(None)
            self._prefill(index, slot)
            self._slots[index] = slot
            admitted += 1

    def _prefill(self, index: int, slot: _Slot) -> None:
        """All but the last prompt token (after a cached prefix), alone and in fixed chunks, then
        into the slot."""
        head = slot.prompt[:-1]
        if not head:
            return
        self._fit_capacity(len(head) + 1)
        cache, slot.prefix = slot.prefix or self._make_cache(), None
        for start in range(slot.cached, len(head), self._prefill_step):
            self._model(mx.array([head[start:start + self._prefill_step]], dtype=mx.int32), cache=cache)
            mx.eval([c.state for c in cache])
        n = len(head)
        for layer, c in enumerate(cache):
            self._kv[2 * layer][index, :, :n, :] = c.keys[0, :, :n, :]
            self._kv[2 * layer + 1][index, :, :n, :] = c.values[0, :, :n, :]
        mx.eval(self._kv)

    def _prompt_cache(self, index: int, slot: _Slot) -> tuple[list | None, list[int] | None]:
        """The slot's KV as one mlx-lm cache per layer, and the tokens it holds, for the prefix
        cache: every position an input has been written to, which is all of prompt + answer but
        the last token picked (never fed back). Copied out and evaluated now, so the step that
        follows can still update its buffers in place."""
        if not self.keep_prompt_caches:
            return None, None
        from mlx_lm.models.cache import KVCache

        context = slot.prompt + slot.generated
        n = min(slot.position, len(context) - 1)
        if n < 1:
            return None, None
        caches = []
        for j in range(0, len(self._kv), 2):
            c = KVCache()
            c.keys = mx.contiguous(self._kv[j][index:index + 1, :, :n, :])
            c.values = mx.contiguous(self._kv[j + 1][index:index + 1, :, :n, :])
            c.offset = n
            caches.append(c)
        mx.eval([(c.keys, c.values) for c in caches])
        return caches, context[:n]

    def _advance(self, index: int, slot: _Slot, token: int, row: mx.array) -> Response:
        slot.generated.append(token)
        reason = None
        if token in self._stop:
            reason = "stop"
        elif len(slot.generated) >= slot.max_tokens:
            reason = "length"
        if reason is None:
            return Response(slot.uid, token, row, None)
        cache, tokens = self._prompt_cache(index, slot)
        self._slots[index] = None
        return Response(slot.uid, token, row, reason, cache, tokens)


def _greedy(logprobs: mx.array) -> mx.array:
    return mx.argmax(logprobs, axis=-1)


def _is_greedy(sampler: Callable | None) -> bool:
    """mlx-lm's temperature-0 sampler, or none: the compiled step's own argmax replaces it."""
    return sampler is None or getattr(sampler, "greedy", False)


def param_dtype(model: Any) -> mx.Dtype:
    """The dtype of the model's first floating-point parameter (float32 for none)."""
    from mlx.utils import tree_flatten

    for _, p in tree_flatten(model.parameters()):
        if mx.issubdtype(p.dtype, mx.floating):
            return p.dtype
    return mx.float32


def _kv_geometry(model: Any, layer: int) -> tuple[int, int]:
    """(kv heads, head dim) of one layer, read from the model's own attention module."""
    try:
        attn = model.layers[layer].self_attn
        heads = attn.n_kv_heads
        head_dim = getattr(attn, "head_dim", None) or attn.k_proj.weight.shape[0] // heads
    except AttributeError as exc:
        raise FixedShapeUnsupported(
            f"batch-invariant decoding reads each layer's KV geometry from self_attn.n_kv_heads; "
            f"{type(model).__name__} has no such attribute ({exc})") from exc
    return heads, head_dim
