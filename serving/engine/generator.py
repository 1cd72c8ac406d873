"""The real batch generators, built on the engine thread: mlx-lm's BatchGenerator, or our
fixed-shape one for batch-invariant decoding."""

from __future__ import annotations

from typing import Any


def make_batch_generator(model: Any, tokenizer: Any, settings) -> Any:
    """mlx-lm's BatchGenerator; with settings.lookup_draft, one that takes prompt-lookup steps
    for a lone greedy sequence (engine.lookup_decoding); with settings.lean_step, its batched
    step is ours (engine.lean_step)."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    from .lean_step import install_lean_step
    from .lookup_decoding import make_lookup_generator

    eos = sorted(tokenizer.eos_token_ids)
    kwargs = dict(
        stop_tokens=[[t] for t in eos],
        completion_batch_size=settings.max_concurrency,
        prefill_batch_size=min(settings.prefill_batch_size, settings.max_concurrency),
        prefill_step_size=settings.prefill_step_size,
        # MLX streams are thread-local: mlx-lm's module-level stream belongs to
        # the importing thread. This thread's default stream also avoids the
        # abort at exit that a stream made with new_stream() off the main thread causes.
        stream=mx.default_stream(mx.default_device()),
    )
    if settings.lookup_draft > 0:
        generator = make_lookup_generator(model, draft_tokens=settings.lookup_draft, **kwargs)
    else:
        generator = BatchGenerator(model, **kwargs)
    if settings.lean_step:
        install_lean_step(generator, model)
    return generator


def make_fixed_shape_generator(model: Any, tokenizer: Any, settings) -> Any:
    """--batch-invariant: one shape for the server's life; --decode-step compiled: shapes bucketed
    to the load."""
    from .bucketed_step import BucketedGenerator
    from .fixed_shape import FixedShapeGenerator

    kwargs = dict(stop_tokens=set(tokenizer.eos_token_ids), rows=settings.max_concurrency,
                  prefill_step_size=settings.prefill_step_size,
                  prefill_per_step=min(settings.prefill_batch_size, settings.max_concurrency))
    if settings.batch_invariant_context is not None:  # no lookup steps: they would break invariance
        return FixedShapeGenerator(model, capacity=settings.batch_invariant_context, **kwargs)
    return BucketedGenerator(model, capacity=settings.compiled_step_context, lookup_draft=settings.lookup_draft,
                             lookup_exact_only=settings.lookup_exact_only, **kwargs)


def synchronize() -> None:
    import mlx.core as mx

    mx.synchronize()
