"""The compiled decode step with shapes that follow the load (`--decode-step compiled`).

It is the fixed-shape generator (fixed_shape.py) with two dimensions let go: the rows and the
KV length grow in powers of two (1, 2, 4, … rows; 256, 512, … positions), so one busy sequence
pays for neither idle rows nor an empty buffer. Each shape compiles once and is reused. Shapes
now change with the batch, so a sequence's numbers may move with its neighbours, as under
mlx-lm's BatchGenerator: what the compiled step saves is the per-op launch and graph-building
cost that dominates a small model's decode step on a GPU. Here, unlike the invariant mode, the
forward may also fuse the q|k|v and gate|up projections (fused_decode.py).

With `lookup_draft`, a greedy sequence decoding alone takes prompt-lookup steps
(lookup_decoding.py has the drafting and acceptance rules): its last token and up to
`lookup_draft` drafted ones go through one compiled forward of 1 + lookup_draft tokens per row,
and the drafts greedy decoding agrees with are kept. On a GPU the step is launch-bound, so the
verifying forward costs about what a one-token step costs. A short draft is padded: the padding's
KV lands beyond the sequence's position, where the mask hides it until a later step overwrites it.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from .fixed_shape import FixedShapeGenerator, Response
from .slot_cache import SlotCache
from .lookup_decoding import LookupStats, LoneSequenceDrafter, accepted_prefix

MIN_BUCKET_CAPACITY = 256


def _bucket(n: int, *, floor: int, ceiling: int) -> int:
    """The smallest power of two >= n (at least floor), capped at ceiling."""
    size = floor
    while size < n:
        size *= 2
    return min(size, ceiling)


class BucketedGenerator(FixedShapeGenerator):
    context_name = "model's context"
    context_flag = ""
    lookup: LookupStats | None = None  # set when lookup steps are on; the engine reports it
    # Shapes already move with the batch here, so a prefix prefilled in another request's chunks
    # changes numbers no more than a neighbour does: the prefix cache is on, as in the batch step.
    takes_cached_prefix = True

    def __init__(self, model: Any, *, stop_tokens: set[int], rows: int, capacity: int,
                 prefill_step_size: int, prefill_per_step: int, min_capacity: int = MIN_BUCKET_CAPACITY,
                 fused: bool = True, lookup_draft: int = 0, lookup_exact_only: bool = False,
                 keep_prompt_caches: bool = False) -> None:
        self._min_capacity = min(min_capacity, capacity)
        self._fused = None
        self.keep_prompt_caches = keep_prompt_caches
        super().__init__(model, stop_tokens=stop_tokens, rows=rows, capacity=capacity,
                         prefill_step_size=prefill_step_size, prefill_per_step=prefill_per_step)
        from .fused_decode import FusedDecoder, sums_differ_by_row_count

        if fused:
            self._fused = FusedDecoder.build(model)
        if lookup_exact_only and sums_differ_by_row_count() and not (self._fused and self._fused.per_token):
            lookup_draft = 0  # this model's verifying forward would sum tokens as no one-token step does
        if lookup_draft > 0:
            self.draft_tokens = lookup_draft
            self.lookup = LookupStats()
            self._verify = mx.compile(self._verify_forward)
            self._drafter = LoneSequenceDrafter()

    # ---- the hooks ------------------------------------------------------------------------
    def _initial_shape(self) -> tuple[int, int]:
        return 1, self._min_capacity

    def _between_steps(self) -> None:
        """Compact the busy slots into fewer rows and a shorter buffer; only between steps, since
        a step in flight addresses its rows by index."""
        rows, capacity = self._shrunk()
        if (rows, capacity) != (self.rows, self.capacity):
            self._resize(rows, capacity, keep=[i for i, s in enumerate(self._slots) if s is not None])

    def _may_pipeline(self) -> bool:
        # A shrink waits for a step boundary with nothing in flight; so does a lookup step, which
        # drafts from the lone sequence's last token on the host.
        return self._shrunk() == (self.rows, self.capacity) and self._lone() is None

    def _fit_capacity(self, needed: int) -> None:
        if needed > self.capacity:
            capacity = _bucket(needed, floor=self.capacity, ceiling=self.max_capacity)
            self._resize(self.rows, capacity, keep=list(range(self.rows)))

    def _grow_rows(self) -> bool:
        """Double the rows (keeping every slot where it is) when all are busy; False at the limit."""
        if self.rows >= self.max_rows:
            return False
        self._resize(min(self.max_rows, self.rows * 2), self.capacity, keep=list(range(self.rows)))
        return True

    def _logits(self, tokens: mx.array, caches: list[SlotCache], mask: mx.array) -> mx.array:
        if self._fused is None:
            return super()._logits(tokens, caches, mask)
        return self._fused(tokens, caches, mask)

    def _lookup_step(self) -> list[Response] | None:
        lone = self._lone()
        if lone is None:
            return None
        index, slot = lone
        width = 1 + self.draft_tokens
        position = slot.position
        # Each input yields one token, and the padding's KV must fit the largest buffer too.
        room = min(slot.max_tokens - len(slot.generated) - 1, self.draft_tokens)
        if room < 1 or position + width > self.max_capacity:
            return None
        history = slot.prompt + slot.generated  # its last token is the one to feed now
        proposal = self._drafter.draft(slot.uid, history[:-1], history[-1], room)
        if not proposal:
            return None
        self._fit_capacity(position + width)
        tokens = [[0] * width for _ in range(self.rows)]  # idle rows: a dummy token at position 0
        tokens[index] = [history[-1], *proposal] + [history[-1]] * (width - 1 - len(proposal))
        positions = [0] * self.rows
        positions[index] = position
        logprobs, greedy, *self._kv = self._verify(mx.array(tokens, dtype=mx.int32),
                                                   mx.array(positions, dtype=mx.int32), *self._kv)
        picks = greedy[index].tolist()
        kept = accepted_prefix(proposal, picks)
        self.lookup.record(len(proposal), kept)
        responses = []
        for j in range(kept + 1):  # the agreed drafts, and greedy's token after them
            slot.enqueued += 1
            responses.append(self._advance(index, slot, picks[j], logprobs[index, j]))
            if responses[-1].finish_reason is not None:
                break
        return responses

    def _lone(self):
        """(row, slot) when lookup is on and one plain greedy sequence, and nothing else, is here."""
        if self.lookup is None or self._pending:
            return None
        busy = [(i, s) for i, s in enumerate(self._slots) if s is not None]
        if len(busy) != 1 or not busy[0][1].plain:
            return None
        return busy[0]

    def _verify_forward(self, tokens: mx.array, positions: mx.array, *kv: mx.array):
        """rows x n tokens at positions, positions + 1, ...: every position's log-probabilities and
        greedy token, and the buffers with the n tokens' KV written."""
        at = positions[:, None] + mx.arange(tokens.shape[1])
        mask = (mx.arange(kv[0].shape[2])[None, None, :] <= at[:, :, None])[:, None]
        caches = [SlotCache(kv[j], kv[j + 1], positions, mask) for j in range(0, len(kv), 2)]
        logits = self._logits(tokens, caches, mask).astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        out = [logprobs, mx.argmax(logprobs, axis=-1).astype(mx.int32)]  # the one-token step's rule
        for c in caches:
            out += [c.keys, c.values]
        return out

    # ---- inside ---------------------------------------------------------------------------
    def _resize(self, rows: int, capacity: int, keep: list[int]) -> None:
        """New buffers of rows x capacity; row r of the new ones is row keep[r] of the old."""
        span = min(self.capacity, capacity)
        index = mx.array(keep, dtype=mx.int32)
        resized = []
        for (heads, head_dim), j in zip(self._geometry, range(0, len(self._kv), 2)):
            for kv in self._kv[j:j + 2]:
                fresh = mx.zeros((rows, heads, capacity, head_dim), dtype=self._dtype)
                if keep:
                    fresh[:len(keep), :, :span, :] = kv[index, :, :span, :]
                resized.append(fresh)
        self._kv = resized
        self._slots = [self._slots[i] for i in keep] + [None] * (rows - len(keep))
        self.rows, self.capacity = rows, capacity

    def _targets(self) -> tuple[int, int]:
        busy = [s for s in self._slots if s is not None]
        rows = _bucket(max(1, len(busy) + len(self._pending)), floor=1, ceiling=self.max_rows)
        reach = max([s.position + 1 for s in busy], default=1)
        return rows, _bucket(reach, floor=self._min_capacity, ceiling=self.max_capacity)

    def _shrunk(self) -> tuple[int, int]:
        """The shape to shrink to: each dimension falls to its target only at a quarter of the
        current bucket (hysteresis), so load hovering at a boundary does not copy the cache back
        and forth."""
        rows, capacity = self._targets()
        return (rows if rows * 4 <= self.rows else self.rows,
                capacity if capacity * 4 <= self.capacity else self.capacity)
