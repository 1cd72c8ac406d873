"""One layer's KV for every slot of a fixed-shape or bucketed decode step, behaving as mlx-lm's
attention expects a cache to: the step's buffers go in and come back out as explicit state."""

from __future__ import annotations

import mlx.core as mx


class FixedShapeUnsupported(ValueError):
    """The model's layers use a cache this generator cannot lay out in fixed slots."""


class SlotCache:
    """One layer's KV for every slot, as mlx-lm's attention expects a cache to behave."""

    def __init__(self, keys: mx.array, values: mx.array, positions: mx.array, mask: mx.array) -> None:
        self.keys, self.values = keys, values
        self.offset = positions  # rope reads per-row offsets from here
        self._mask = mask

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        # keys: rows x heads x n x d, the n new tokens of each row at its offset, offset + 1, ...
        at = self.offset[:, None] if keys.shape[2] == 1 else self.offset[:, None] + mx.arange(keys.shape[2])
        where = mx.broadcast_to(at[:, None, :, None], keys.shape).astype(mx.int32)
        self.keys = mx.put_along_axis(self.keys, where, keys, axis=2)
        self.values = mx.put_along_axis(self.values, where, values, axis=2)
        return self.keys, self.values

    def make_mask(self, n: int, *, return_array: bool = False, window_size: int | None = None) -> mx.array:
        if n != self._mask.shape[2] or window_size is not None:
            raise FixedShapeUnsupported(f"this step's mask is for {self._mask.shape[2]} tokens per row, without "
                                        f"windows: asked for {n}")
        return self._mask
