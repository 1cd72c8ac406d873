"""Would prompt-lookup drafting pay on a workload? Count, before building it.

`python -m suites.throughput.lookup_probe [--model M] [--case seed-c10] [--draft 4] [OUT.json]`
decodes each of the case's prompts greedily (the real model, one sequence at a time), then replays
the answer as n-gram lookup speculative decoding would: at each step, draft up to `--draft` tokens
by finding the latest earlier match of the last 3 (else 2) tokens in the prompt and the answer so far,
accept the draft's prefix that greedy decoding produced, and add the one token the verifying
forward makes itself. It prints tokens per forward (1.0: drafting never helps) per prompt and
overall. Greedy acceptance is exact, so the count is what the engine would get, not an estimate;
what a forward of 1 + draft rows costs is the BLAS's business (see the README's shim section).

With `--check`, each prompt is also decoded alone by mlx-lm's own BatchGenerator step and by the
engine's generator as the server builds it (the lean step with lookup decoding:
serving.engine.lean_step, serving.engine.lookup_decoding), and their tokens are compared: the
evidence that lookup decoding leaves greedy output unchanged on a real model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from serving.engine.lookup_decoding import MAX_NGRAM, accepted_prefix, draft

from .cases import UID, load_cases


def forwards_needed(prompt: list[int], answer: list[int], size: int) -> int:
    """Verifying forwards lookup decoding needs to produce `answer` after `prompt`."""
    done = forwards = 0
    while done < len(answer):
        proposal = draft(prompt + answer[:done], min(size, len(answer) - done))
        done += accepted_prefix(proposal, answer[done:]) + 1  # the forward's own token comes with the accepted drafts
        forwards += 1
    return forwards


def chat_prompt(tokenizer, text: str, index: int) -> list[int]:
    """A case prompt as the probes send it: its unique-id placeholder filled per prompt, as a
    one-turn chat with the generation prompt."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text.replace(UID, f"probe-{index}")}],
                                         add_generation_prompt=True)


def case_prompts(tokenizer, cases: str) -> list[list[int]]:
    """Every prompt of the comma-separated throughput cases (names or tags), in order."""
    return [chat_prompt(tokenizer, text, i) for case in load_cases(cases.split(",")) for i, text in enumerate(case.prompts)]


def decode_burst(generator, prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], float]:
    """Every prompt inserted at once; each one's greedy tokens, and the seconds until all finish."""
    from serving.engine.request import SamplingParams
    from serving.engine.sampling import build_sampler

    started = time.perf_counter()
    uids = generator.insert(prompts, max_tokens=[max_tokens] * len(prompts),
                            samplers=[build_sampler(SamplingParams(temperature=0.0)) for _ in prompts])
    tokens: dict[int, list[int]] = {u: [] for u in uids}
    finished: set[int] = set()
    while len(finished) < len(uids):
        for r in generator.next()[1]:
            tokens[r.uid].append(r.token)
            if r.finish_reason:
                finished.add(r.uid)
    return [tokens[u] for u in uids], time.perf_counter() - started


def decode_alone(generator, prompt: list[int], max_tokens: int) -> list[int]:
    return decode_burst(generator, [prompt], max_tokens)[0][0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suites.throughput.lookup_probe", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="write the per-prompt counts here as JSON")
    parser.add_argument("--model", default="smollm2-135m", help="catalog id or model folder")
    parser.add_argument("--case", default="seed-c10", help="throughput case whose prompts and max_tokens to use")
    parser.add_argument("--draft", type=int, default=4, help="tokens drafted per step at most")
    parser.add_argument("--check", action="store_true",
                        help="also decode through BatchGenerator and the lookup generator and compare their tokens")
    args = parser.parse_args(argv)

    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    from harness.bench import resolve_model_folder
    from serving.backend import probe_setup

    case = load_cases([args.case])[0]
    model, tokenizer = load(str(resolve_model_folder(args.model).path))
    generators = _generators(model, tokenizer, args.draft) if args.check else None
    rows, total_tokens, total_forwards = [], 0, 0
    for i, text in enumerate(case.prompts):
        prompt = chat_prompt(tokenizer, text, i)
        answer = [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=case.max_tokens,
                                                   sampler=lambda logits: mx.argmax(logits, axis=-1))]
        forwards = forwards_needed(prompt, answer, args.draft)
        rows.append({"prompt": i, "tokens": len(answer), "forwards": forwards})
        if generators:
            plain, lookup = (decode_alone(g, prompt, case.max_tokens) for g in generators)
            rows[-1].update(identical=plain == lookup, lookup=generators[1].lookup.as_dict())
            print(f"prompt {i}: BatchGenerator and lookup tokens {'identical' if plain == lookup else 'DIFFER'}")
        total_tokens, total_forwards = total_tokens + len(answer), total_forwards + forwards
        print(f"prompt {i}: {len(answer)} tokens in {forwards} forwards ({len(answer) / forwards:.2f} per forward)")
    print(f"{args.case}, draft {args.draft}: {total_tokens} tokens in {total_forwards} forwards, "
          f"{total_tokens / total_forwards:.2f} tokens per forward (n={len(rows)} prompts)")
    if generators:
        print(f"identical tokens: {sum(r['identical'] for r in rows)}/{len(rows)} prompts; "
              f"lookup steps {generators[1].lookup.as_dict()}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"model": args.model, "case": args.case, **probe_setup(), "draft": args.draft, "max_ngram": MAX_NGRAM,
                       "tokens": total_tokens, "forwards": total_forwards, "prompts": rows,
                       **({"identical": sum(r["identical"] for r in rows),
                           "lookup": generators[1].lookup.as_dict()} if generators else {})}, fh, indent=1)
    return 0


def _generators(model, tokenizer, draft_tokens: int):
    """mlx-lm's own BatchGenerator step, and the engine's generator as the server makes it (the
    lean step, with lookup decoding)."""
    from serving.engine.generator import make_batch_generator
    from serving.engine.loop import EngineSettings

    return (make_batch_generator(model, tokenizer, EngineSettings(max_concurrency=1, lookup_draft=0, lean_step=False)),
            make_batch_generator(model, tokenizer, EngineSettings(max_concurrency=1, lookup_draft=draft_tokens)))


if __name__ == "__main__":
    sys.exit(main())
