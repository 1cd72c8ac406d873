"""Do packed weights change greedy tokens, and what do they save? Check it on a real model.

`python -m suites.throughput.packed_probe [--model M] [--cases seed-c10,long-prompt] [OUT.json]`
runs with the server's own setup (the BLAS shim and allocator preloaded, the CPU compiler's flags)
and decodes the cases' prompts greedily through the engine's generator as the server builds it on a
CPU: each prompt alone, then all of them as one burst. Then it packs the model's weights as the
server does at start (serving.engine.packed_weights) and decodes them all again, and compares the
token ids per prompt. It also times the two ways alone and in the burst (one process, one run each:
the bench and compare measure speed; this is the token check, with the time beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

MODULE = "suites.throughput.packed_probe"


def _with_server_setup(argv: list[str]) -> None:
    """Re-execute with the BLAS and allocator the server would preload (a no-op once they are)."""
    from serving.backend import choose_allocator, choose_preload, reexec_with_preload

    preload, _ = choose_preload("auto", environ=dict(os.environ))
    allocator, note = choose_allocator("auto", environ=dict(os.environ))
    if preload is not None or allocator is not None:
        reexec_with_preload(preload, argv, module=MODULE, allocator=allocator, allocator_note=note)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="write the comparison here as JSON")
    parser.add_argument("--model", default="smollm2-135m", help="catalog id or model folder")
    parser.add_argument("--cases", default="seed-c10,long-prompt", help="throughput cases whose prompts to decode")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    _with_server_setup(argv)

    from mlx_lm import load

    from harness.bench import resolve_model_folder
    from serving.backend import probe_setup
    from serving.catalog import default_cache_dir
    from serving.cpu_jit import arrange
    from serving.engine.generator import make_batch_generator
    from serving.engine.loop import EngineSettings
    from serving.engine.packed_weights import fused_weights, pack_exact_weights

    from .lookup_probe import case_prompts, decode_alone, decode_burst

    arrange(default_cache_dir(), enabled=True)
    model, tokenizer = load(str(resolve_model_folder(args.model).path))
    prompts = case_prompts(tokenizer, args.cases)
    generator = make_batch_generator(model, tokenizer, EngineSettings(max_concurrency=32))

    def decode() -> dict:
        started = time.perf_counter()
        alone = [decode_alone(generator, p, args.max_tokens) for p in prompts]
        alone_s = time.perf_counter() - started
        burst, burst_s = decode_burst(generator, prompts, args.max_tokens)
        return {"alone": alone, "burst": burst, "alone_s": alone_s, "burst_s": burst_s}

    decode_burst(generator, prompts[:2], 4)  # warm: the first steps build kernels
    before = decode()
    packed = pack_exact_weights(model, policy="auto", extra=fused_weights(generator))
    if not packed.packed:
        print(f"nothing was packed ({packed.note or 'no weight is exact blocks'}): nothing to compare",
              file=sys.stderr)
        return 1
    after = decode()
    rows = [{"prompt": i, "prompt_tokens": len(p),
             "identical_alone": a == c, "identical_burst": b == d}
            for i, (p, a, b, c, d) in enumerate(zip(prompts, before["alone"], before["burst"], after["alone"],
                                                     after["burst"]))]
    same = sum(r["identical_alone"] and r["identical_burst"] for r in rows)
    seconds = {f"{way}_{phase}": run[f"{way}_s"] for phase, run in (("float32", before), ("packed", after))
               for way in ("alone", "burst")}
    print(f"packed {packed.packed}/{packed.examined} matrices ({packed.bytes / 1e6:.0f} MB, {packed.seconds:.2f} s)")
    print(f"identical tokens, float32 = packed, alone and in one burst: {same}/{len(rows)} prompts")
    print("seconds (one run each): " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"model": args.model, "cases": args.cases, **probe_setup(), "max_tokens": args.max_tokens,
                       "packed": packed.as_dict(), "identical": same, "prompts": rows, "seconds": seconds},
                      fh, indent=1)
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
