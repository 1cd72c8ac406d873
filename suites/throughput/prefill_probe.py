"""Does batching a burst's prefills change greedy tokens? Check it on a real model.

`python -m suites.throughput.prefill_probe [--model M] [--cases seed-c10,long-prompt] [OUT.json]`
takes the cases' prompts (a long prompt among short ones makes the engine cut its prefill calls into
shorter chunks: serving.engine.generator.prefill_chunk) and decodes them greedily through the
engine's generator as the server builds it on a CPU, three ways: every prompt alone; all inserted
at once with mlx-lm's prefill batch of 8; all at once with every prompt in one prefill batch and
the bounded chunks. It compares the token ids per prompt and times the two bursts.
"""

from __future__ import annotations

import argparse
import json
import sys

from .lookup_probe import case_prompts, decode_alone, decode_burst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suites.throughput.prefill_probe", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="write the comparison here as JSON")
    parser.add_argument("--model", default="smollm2-135m", help="catalog id or model folder")
    parser.add_argument("--cases", default="seed-c10,long-prompt", help="throughput cases whose prompts to burst")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    from mlx_lm import load

    from harness.bench import resolve_model_folder
    from serving.backend import probe_setup
    from serving.engine.generator import make_batch_generator
    from serving.engine.loop import EngineSettings

    model, tokenizer = load(str(resolve_model_folder(args.model).path))
    prompts = case_prompts(tokenizer, args.cases)

    def generator(prefill_batch_size: int):
        return make_batch_generator(model, tokenizer, EngineSettings(max_concurrency=32,
                                                                     prefill_batch_size=prefill_batch_size,
                                                                     lookup_draft=4))

    alone = [decode_alone(generator(8), p, args.max_tokens) for p in prompts]
    by_eight, eight_s = decode_burst(generator(8), prompts, args.max_tokens)
    all_at_once, once_s = decode_burst(generator(32), prompts, args.max_tokens)
    rows = [{"prompt": i, "prompt_tokens": len(p), "identical": a == b == c}
            for i, (p, a, b, c) in enumerate(zip(prompts, alone, by_eight, all_at_once))]
    same = sum(r["identical"] for r in rows)
    print(f"identical tokens, alone = batches of 8 = one batch: {same}/{len(rows)} prompts; "
          f"burst seconds: batches of 8 {eight_s:.2f}, one batch {once_s:.2f} (one process, one run each)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"model": args.model, "cases": args.cases, **probe_setup(), "max_tokens": args.max_tokens,
                       "identical": same, "prompts": rows,
                       "burst_seconds": {"prefill_batch_8": eight_s, "one_prefill_batch_bounded": once_s}},
                      fh, indent=1)
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
