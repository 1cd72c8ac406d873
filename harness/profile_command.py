"""`python -m harness profile-step`: one decode step broken down, as evidence and a report section.

The measuring happens in a child process (harness/step_profile.py) given the BLAS our server
would choose (serving.backend.choose_preload, the same --blas policy): the BLAS must be
preloaded before MLX loads, and the harness's own process has MLX's bundled one. The child's
MLX CPU compiler gets the flags our server gives it too (serving.cpu_jit), and its malloc the
allocator our server runs on by default (serving.backend.choose_allocator).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.table import Table

from .bench import Outcome, Plan, now, resolve_model_folder
from .evidence import environment
from .profile_summary import summarize_profile
from .publish import Described, publish_block
from .servers import REPO_ROOT

PROFILE_NAME = "step-profile"  # the evidence folder's profile level: no serving profile is involved
ORDER = "one process; per repeat the parts run in a fixed order, batch sizes one after another"


def _child_env(blas: str) -> tuple[dict[str, str], str | None]:
    import mlx.core as mx

    from serving.backend import (BLAS_NOTE_ENV, CPU_JIT_ENV, REEXEC_MARKER, add_preloads, choose_allocator,
                                 choose_preload)
    from serving.catalog import default_cache_dir
    from serving.cpu_jit import plan

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", REEXEC_MARKER, BLAS_NOTE_ENV, CPU_JIT_ENV)}
    env.update(plan(default_cache_dir(), environ=env, mlx_version=mx.__version__)[1])
    preload, note = choose_preload(blas, environ=env)
    allocator, _ = choose_allocator("auto", environ=env)  # as our server's default
    add_preloads(env, preload, allocator)  # env holds no LD_PRELOAD of its own: ours alone
    env[REEXEC_MARKER] = preload.kind if preload else "profile"
    if note:
        env[BLAS_NOTE_ENV] = note
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env, note


def measure(args, *, model_path: str, dtype: str) -> dict:
    env, _ = _child_env(args.blas)
    from .roofline import FORMULA, measure as measure_roofline, model_size

    try:
        roof = measure_roofline(preload=env.get("LD_PRELOAD"), dtype=dtype)
        roof.update(model=model_size(Path(model_path)), formula=FORMULA)
    except (RuntimeError, ValueError, OSError) as exc:
        roof = {"error": str(exc)[-1000:]}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.json"
        argv = [sys.executable, "-m", "harness.step_profile", "--model-path", model_path, "--batch", args.batch,
                "--repeats", str(args.repeats), "--context", str(args.context), "--out", str(out),
                *(["--no-parts"] if args.no_parts else [])]
        done = subprocess.run(argv, env=env, cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE)
        if done.returncode != 0:
            raise RuntimeError(f"the step profile failed (exit {done.returncode}); its log is above")
        return {**json.loads(out.read_text()), "roofline": roof}


def profile_step(args, *, console) -> int:
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    if not batches or min(batches) < 1:
        raise ValueError("--batch needs positive batch sizes, e.g. 1,10,32")
    model = resolve_model_folder(args.model, dtype=args.dtype)
    started, env = now(), environment()
    result = measure(args, model_path=model.path, dtype=model.dtype)
    block = summarize_profile(result["records"])
    cases = [Described({"name": f"batch-{b}", "batch": b, "context_tokens": args.context, "repeats": args.repeats})
             for b in batches]
    plan = Plan(suite="profile", model=args.model, profile=PROFILE_NAME, cases=cases, servers=[],
                repeats=args.repeats, warmup_requests=0, dtype=args.dtype)
    health = {"backend": {**result["backend"], "dtype": model.dtype},
              "config": {"blas": args.blas, "batches": batches, "context_tokens": args.context,
                         "parts": not args.no_parts, "model": result["model"]},
              "engine": {"mode": "step profile over mlx-lm's BatchGenerator"}}
    outcome = Outcome(result["records"], [], health, model, started, now(), env, roofline=result["roofline"])
    directory, _ = publish_block(plan, outcome, evidence_root=args.evidence_dir, block_name="profile", block=block,
                                 interleaving=ORDER)
    print_profile(block, console=console)
    console.print(f"BLAS: {result['backend'].get('blas')}")
    console.print(f"evidence: {directory}")
    from .reporting import render_all
    render_all(args.evidence_dir, args.reports_dir, console=console)
    return 0


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.2f}"


def print_profile(block: dict, *, console) -> None:
    steps = Table(title="one decode step, ms (medians)")
    for col in ("batch", "engine step", "forward (graph)", "forward parts, summed", "sampling", "outside forward",
                "host per token", "ops"):
        steps.add_column(col)
    for s in block["steps"]:
        steps.add_row(str(s["batch"]), _ms(s["engine_step_s"]), _ms(s["forward_whole_s"]),
                      _ms(s["forward_parts_sum_s"]), _ms(s["sampling_s"]), _ms(s["outside_forward_s"]),
                      _ms(s["host_per_token_s"]), str(s["ops"]))
    console.print(steps)
    parts = Table(title="parts, ms: median [95% interval]")
    for col in ("batch", "group", "part", "median [interval]"):
        parts.add_column(col)
    for p in block["parts"]:
        ci = "" if p["ci_low_s"] is None else f" [{_ms(p['ci_low_s'])}, {_ms(p['ci_high_s'])}]"
        parts.add_row(str(p["batch"]), p["group"], p["part"], _ms(p["median_s"]) + ci)
    console.print(parts)
