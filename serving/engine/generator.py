"""The real batch generators, built on the engine thread: mlx-lm's BatchGenerator, or our
fixed-shape one for batch-invariant decoding; and the choice between them at load."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

log = logging.getLogger("mlx_proof.engine")

# mlx-lm's default prefill batch: a prefill call of up to this many prompts keeps their whole
# prefill_step_size chunks, as before; a larger batch gets shorter chunks (prefill_chunk).
CHUNK_KEEPING_BATCH = 8


def prefill_chunk(prompts: int, *, step: int) -> int:
    """Tokens per prompt in one prefill call of `prompts` prompts. mlx-lm pads every prompt of a
    call to the longest chunk in it, so one long prompt among many short ones would make each
    short one cost a whole chunk: this keeps a call's positions (prompts x chunk) within what a
    call of CHUNK_KEEPING_BATCH prompts could compute."""
    return max(1, min(step, step * CHUNK_KEEPING_BATCH // max(1, prompts)))


def bound_prefill_calls(generator: Any) -> None:
    """Make a BatchGenerator pick each prefill call's chunk by prefill_chunk, for the prompts the
    call will hold (those mid-prefill and those it is about to take in)."""
    step = generator.prefill_step_size
    plain_next = generator._next

    def _next():
        joining = min(generator.prefill_batch_size - len(generator._prompt_batch),
                      generator.completion_batch_size - len(generator._generation_batch),
                      len(generator._unprocessed_sequences))
        generator.prefill_step_size = prefill_chunk(len(generator._prompt_batch) + max(0, joining), step=step)
        return plain_next()

    generator._next = _next


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
    if settings.prefill_batch_size > CHUNK_KEEPING_BATCH:
        bound_prefill_calls(generator)
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
                             lookup_exact_only=settings.lookup_exact_only,
                             keep_prompt_caches=settings.prefix_cache_bytes > 0, **kwargs)


def make_generator(model: Any, tokenizer: Any, settings) -> Any:
    """The generator the settings name: a fixed-shape one for the batch-invariant or compiled
    step, mlx-lm's BatchGenerator otherwise."""
    if settings.batch_invariant_context is not None or settings.compiled_step_context is not None:
        return make_fixed_shape_generator(model, tokenizer, settings)
    return make_batch_generator(model, tokenizer, settings)


def first_generator(factory: Callable[[Any, Any, Any], Any], model: Any, tokenizer: Any, settings) -> tuple[Any, Any]:
    """The generator a freshly loaded model starts with, and the settings it runs under: the
    compiled step that --decode-step auto chose gives way to the batch step over weights that
    are not float32, or for a model it cannot lay out (the settings then say so, for /health and
    for a generator rebuilt after a failed step)."""
    import mlx.core as mx

    from .fixed_shape import FixedShapeUnsupported, param_dtype

    auto = settings.decode_step_auto and settings.compiled_step_context is not None
    if auto and model is not None and (dtype := param_dtype(model)) != mx.float32:
        # The compiled step's fused kernels keep what eager ops round to bf16/fp16 between ops,
        # which moved greedy ties on the H100 (README: "Compiled decode step"); auto never
        # changes greedy tokens, so it runs only over float32 weights.
        why = f"{dtype} weights"
    else:
        try:
            return factory(model, tokenizer, settings), settings
        except FixedShapeUnsupported as exc:
            if not auto:
                raise
            why = str(exc)
    # Lookup steps go too: on CUDA they pay only in the compiled step (backend.lookup_runs).
    log.warning("--decode-step auto: the batch step serves this model, not the compiled step (%s)", why)
    settings = dataclasses.replace(settings, compiled_step_context=None, lookup_draft=0)
    return factory(model, tokenizer, settings), settings


def synchronize() -> None:
    import mlx.core as mx

    mx.synchronize()
