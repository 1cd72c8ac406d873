"""The batched decode step, without the work a greedy batch throws away.

mlx-lm's GenerationBatch step runs the model's forward, normalises every row's logits with a
log-softmax, samples, and evaluates the normalised rows each step. For a batch of greedy rows
without logits processors, that log-softmax is the step's largest elementwise cost on a CPU
(an exp per vocabulary entry: 8 ms of a 110 ms step at 10 rows of SmolLM2-135M here, 43 of 271
at 32; README, "Step profile"), and nothing reads it unless a request asked for log-probabilities.
This step, a subclass of mlx-lm's GenerationBatch that keeps its batch state and bookkeeping:

- takes the greedy token as the argmax of the logits themselves (the log-softmax subtracts one
  number per row, which can only turn two logits a rounding apart into a tie, never reorder them);
- leaves each row's log-probabilities lazy: MLX computes them, as before, only if the engine
  reads them (a request's `logprobs`, the divergence monitor);
- runs the forward through the fused-projection decoder (engine.fused_decode) where the model is
  a plain Llama or Qwen2: one product for q|k|v and one for gate|up per layer, the same dot
  products, fewer and larger BLAS calls.

Sampled rows and rows with processors get the normalised distribution they sample from, as
before. `--deterministic` keeps mlx-lm's own step, which its evidence was made with.
"""

from __future__ import annotations

import functools
from typing import Any


def install_lean_step(generator: Any, model: Any) -> None:
    """Give a BatchGenerator (before anything is inserted) the lean generation batch."""
    from .fused_decode import FusedDecoder

    if len(generator._generation_batch) or len(generator._prompt_batch) or generator._unprocessed_sequences:
        raise RuntimeError("the lean step must be installed on an empty generator")
    batch = lean_batch_class().empty(model, generator.sampler)
    batch.fused = FusedDecoder.build(model)
    generator._generation_batch = batch


@functools.cache
def lean_batch_class():
    """The GenerationBatch subclass, made once (mlx-lm is imported on the engine thread)."""
    import mlx.core as mx
    from mlx_lm.generate import GenerationBatch

    class LeanGenerationBatch(GenerationBatch):
        fused = None  # the fused-projection decoder, or None: the model's own forward

        def _step(self):
            self._current_tokens = self._next_tokens
            self._current_logprobs = self._next_logprobs
            inputs = self._current_tokens
            if self.fused is not None:
                logits = self.fused(inputs, self.prompt_cache)
            else:
                logits = self.model(inputs[:, None], cache=self.prompt_cache)[:, -1, :]
            samplers = [self.fallback_sampler if s is None else s
                        for s in (self.samplers or [None] * len(self.uids))]
            token_context = []
            processed = any(self.logits_processors)
            if processed:
                logits, token_context = self._processed(logits, inputs)
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)  # lazy: read only if asked for
            if not processed and all(getattr(s, "greedy", False) for s in samplers):
                sampled = mx.argmax(logits, axis=-1)
            elif all(s is samplers[0] for s in samplers):
                sampled = samplers[0](logprobs)
            else:
                sampled = mx.concatenate([s(logprobs[e:e + 1]) for e, s in enumerate(samplers)], axis=0)
            self._next_tokens = sampled
            self._next_logprobs = list(logprobs)
            mx.async_eval(self._next_tokens, token_context)
            mx.eval(inputs)
            inputs = inputs.tolist()
            for sti, ti in zip(self.tokens, inputs):
                sti.append(ti)
            return inputs, self._current_logprobs

        def _processed(self, logits, inputs):
            """Each row through its own processors (penalties, logit bias), as mlx-lm applies them."""
            rows, contexts = [], []
            for e in range(len(self.uids)):
                row = logits[e:e + 1]
                if processors := self.logits_processors[e] or ():
                    context = self._token_context[e].update_and_fetch(inputs[e:e + 1])
                    contexts.append(context)
                    for processor in processors:
                        row = processor(context, row)
                rows.append(row)
            return mx.concatenate(rows, axis=0), contexts

    return LeanGenerationBatch
