"""Does the compiled decode step change greedy tokens? Token ids against mlx-lm's eager step.

`python -m suites.divergence.step_tokens MODEL_FOLDER [OUT.json]` decodes the same seeded
prompts (random token ids, 4-200 long, 64 tokens each) four ways: mlx-lm's BatchGenerator with
each prompt alone (the serial reference), the same batched, and `--decode-step compiled`'s
bucketed step alone and batched. It counts the prompts whose tokens equal the reference. A
perfect count says the optimisation changes nothing; the eager batched count is the yardstick
for what batching alone already moves on this device and dtype.
"""

from __future__ import annotations

import json
import random
import sys

import mlx.core as mx

PROMPTS, TOKENS, SEED = 24, 64, 7


def _drain(generator, prompts: list[list[int]]) -> list[list[int]]:
    uids = generator.insert(prompts, max_tokens=[TOKENS] * len(prompts))
    out = {u: [] for u in uids}
    while any(len(v) < TOKENS for v in out.values()):
        for r in generator.next()[1]:
            out[r.uid].append(r.token)
    return [out[u] for u in uids]


def main(argv: list[str]) -> int:
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator

    from serving.engine.bucketed_step import BucketedGenerator

    if not argv:
        print(__doc__)
        return 2
    model, _ = load(argv[0])
    rng = random.Random(SEED)
    prompts = [[rng.randrange(10, 40000) for _ in range(rng.randrange(4, 200))] for _ in range(PROMPTS)]

    def eager(ps):
        return _drain(BatchGenerator(model, stop_tokens=[], completion_batch_size=32, prefill_batch_size=8,
                                     prefill_step_size=512, stream=mx.default_stream(mx.default_device())), ps)

    def compiled(ps):
        return _drain(BucketedGenerator(model, stop_tokens=set(), rows=32, capacity=4096, prefill_step_size=512,
                                        prefill_per_step=8), ps)

    reference = [eager([p])[0] for p in prompts]
    same = lambda got: sum(a == b for a, b in zip(got, reference))  # noqa: E731
    result = {"model": argv[0].rstrip("/").split("/")[-1], "device": str(mx.default_device()),
              "prompts": PROMPTS, "tokens": TOKENS, "seed": SEED,
              "compiled_alone_eq_eager_alone": same([compiled([p])[0] for p in prompts]),
              "compiled_batched_eq_eager_alone": same(compiled(prompts)),
              "eager_batched_eq_eager_alone": same(eager(prompts))}
    print(json.dumps(result))
    if len(argv) > 1:
        with open(argv[1], "a") as fh:
            fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
