"""Does one of our decode steps change greedy tokens? Token ids against mlx-lm's eager step.

`python -m suites.divergence.step_tokens MODEL_FOLDER [OUT.json] [--step compiled|lean]` decodes
the same seeded prompts (random token ids, 4-200 long, 64 tokens each) four ways: mlx-lm's
BatchGenerator with each prompt alone (the serial reference), the same batched, and the step
under test alone and batched: `compiled` (the default) is `--decode-step compiled`'s bucketed
step, `lean` the default batch step (engine.lean_step; prompt-lookup off, so that alone it is
the lean step that runs). It counts the prompts whose tokens equal the reference. A perfect
count says the optimisation changes nothing; the eager batched count is the yardstick for what
batching alone already moves on this device and dtype.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import mlx.core as mx

PROMPTS, TOKENS, SEED = 24, 64, 7


def _drain(generator, prompts: list[list[int]]) -> list[list[int]]:
    from serving.engine.request import SamplingParams
    from serving.engine.sampling import build_sampler

    # The engine's own greedy sampler, which a step may recognise (engine.lean_step does).
    uids = generator.insert(prompts, max_tokens=[TOKENS] * len(prompts),
                            samplers=[build_sampler(SamplingParams(temperature=0.0)) for _ in prompts])
    out = {u: [] for u in uids}
    while any(len(v) < TOKENS for v in out.values()):
        for r in generator.next()[1]:
            out[r.uid].append(r.token)
    return [out[u] for u in uids]


def main(argv: list[str]) -> int:
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator

    from serving.backend import probe_setup
    from serving.engine.bucketed_step import BucketedGenerator
    from serving.engine.lean_step import install_lean_step

    step = "compiled"
    if "--step" in argv:
        at = argv.index("--step")
        step, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    if not argv or step not in ("compiled", "lean") or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if not Path(argv[0]).is_dir():  # mlx-lm would take it for a hub id and try to download it
        print(f"step_tokens: {argv[0]} is not a model folder (a catalog model's folder: "
              f"`mlx-proof models --resolve ID`)", file=sys.stderr)
        return 2
    model, _ = load(argv[0])
    rng = random.Random(SEED)
    prompts = [[rng.randrange(10, 40000) for _ in range(rng.randrange(4, 200))] for _ in range(PROMPTS)]

    def batch_generator():
        return BatchGenerator(model, stop_tokens=[], completion_batch_size=32, prefill_batch_size=8,
                              prefill_step_size=512, stream=mx.default_stream(mx.default_device()))

    def eager(ps):
        return _drain(batch_generator(), ps)

    def compiled(ps):
        return _drain(BucketedGenerator(model, stop_tokens=set(), rows=32, capacity=4096, prefill_step_size=512,
                                        prefill_per_step=8), ps)

    def lean(ps):
        generator = batch_generator()
        install_lean_step(generator, model)
        return _drain(generator, ps)

    under_test = {"compiled": compiled, "lean": lean}[step]

    reference = [eager([p])[0] for p in prompts]
    same = lambda got: sum(a == b for a, b in zip(got, reference))  # noqa: E731
    result = {"model": argv[0].rstrip("/").split("/")[-1], "device": str(mx.default_device()),
              "prompts": PROMPTS, "tokens": TOKENS, "seed": SEED, "step": step,
              # Which BLAS and CPU compiler flags computed this, and a digest of the reference tokens,
              # so runs under two setups can say whether mlx-lm's own tokens moved between them.
              **probe_setup(),
              "reference_sha256": hashlib.sha256(json.dumps(reference).encode()).hexdigest()[:16],
              f"{step}_alone_eq_eager_alone": same([under_test([p])[0] for p in prompts]),
              f"{step}_batched_eq_eager_alone": same(under_test(prompts)),
              "eager_batched_eq_eager_alone": same(eager(prompts))}
    print(json.dumps(result))
    if len(argv) > 1:
        with open(argv[1], "a") as fh:
            fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
