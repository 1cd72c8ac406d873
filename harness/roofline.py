"""The machine's roofline, measured, and the decode-step bound it sets for a model.

Measured through MLX in a child process given the BLAS our server preloaded (so the numbers
are the server's, not numpy's), on MLX's default device:
- GEMM: a large square matmul in the probe dtype (fp32 on CPU), FLOP/s = 2 n^3 / time;
- bandwidth, three ways: a sum over a large array (read), a copy (read + write, counted as
  2x the bytes), and a one-row product through a large weight matrix (what a batch-1 decode
  step does, through the BLAS); the bound uses the best of them, the bandwidth the machine
  was seen to reach.

The bound of one decode step at batch b (documented in README "Roofline"):

    bytes(step)  = weight bytes read per step (every weight once; an untied input embedding
                   is looked up, not read whole, so it is left out)
    flops(step)  = 2 * b * (multiply-accumulate weights), attention and norms left out
    t_bound(b)   = max(bytes / bandwidth, flops / gemm_flops)
    tok/s bound  = b / t_bound(b)

At small b the weight read dominates (bandwidth-bound); at large b the arithmetic does.

A case's output tok/s also pays for its prompts. The bound of a whole case (`case_bound`) adds
their prefill to the answers' decode steps, for b requests of P freshly prefilled prompt tokens
(cached ones cost nothing) and N answer tokens each, the first of which the prefill gives:

    t_case(b)    = max(bytes(step) / bandwidth, b * P * flops_per_token / gemm_flops)
                   + (N - 1) * t_bound(b)
    tok/s bound  = b * N / t_case(b)
Attention over the KV cache, norms and sampling are left out, so the bound is optimistic
(achieved/bound understates nothing the server could win back by doing the same arithmetic
faster).
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, sys, time
import mlx.core as mx

dtype = getattr(mx, sys.argv[1])
gpu = mx.default_device() != mx.cpu
n = 8192 if gpu else 2048
rounds = 5

def timed(fn, reps):
    mx.eval(fn())
    out = []
    for _ in range(reps):
        t = time.perf_counter(); mx.eval(fn()); out.append(time.perf_counter() - t)
    return out

a = mx.random.normal((n, n)).astype(dtype); b = mx.random.normal((n, n)).astype(dtype); mx.eval(a, b)
gemm = [2 * n**3 / t / 1e9 for t in timed(lambda: a @ b, rounds)]
del a, b
elems = (1 << 28) if gpu else (1 << 26)  # 1 GiB / 256 MiB of fp32
x = mx.random.uniform(shape=(elems,)); mx.eval(x)
read = [4 * elems / t / 1e9 for t in timed(lambda: mx.sum(x), rounds)]
copy = [8 * elems / t / 1e9 for t in timed(lambda: x * 1.5, rounds)]
del x
k, m = 4096, (1 << 28 if gpu else 1 << 26) // 4096
w = mx.random.normal((k, m)).astype(dtype); v = mx.random.normal((1, k)).astype(dtype); mx.eval(w, v)
itemsize = mx.zeros((1,), dtype=dtype).itemsize
gemv = [k * m * itemsize / t / 1e9 for t in timed(lambda: v @ w, rounds)]
print(json.dumps({"device": str(mx.default_device()), "dtype": sys.argv[1], "gemm_n": n,
                  "gemm_gflops": gemm, "read_gbs": read, "copy_gbs": copy, "gemv_gbs": gemv,
                  "gemv_shape": [1, k, m]}))
"""

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2,
               "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def measure(*, preload: str | None, dtype: str = "float32", python: str = sys.executable) -> dict:
    """The roofline, measured in a child process with `preload` as its LD_PRELOAD."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["MLX_PROOF_BLAS_CHOSEN"] = "roofline-probe"  # never re-executed: it is given its BLAS
    if preload:
        env["LD_PRELOAD"] = preload
    done = subprocess.run([python, "-c", PROBE, dtype], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"roofline probe failed: {done.stderr.strip()[-800:]}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    med = {k: statistics.median(raw[k]) for k in ("gemm_gflops", "read_gbs", "copy_gbs", "gemv_gbs")}
    return {"device": raw["device"], "dtype": raw["dtype"], "ld_preload": preload,
            "gemm": {"n": raw["gemm_n"], "gflops": med["gemm_gflops"], "runs": raw["gemm_gflops"]},
            "bandwidth": {"read_gbs": med["read_gbs"], "copy_gbs": med["copy_gbs"], "gemv_gbs": med["gemv_gbs"],
                          "gemv_shape": raw["gemv_shape"],
                          "bound_gbs": max(med["read_gbs"], med["copy_gbs"], med["gemv_gbs"])}}


def safetensors_header(path: Path) -> dict:
    """A .safetensors file's tensor table (names, dtypes, shapes, byte ranges), without its data."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def model_size(folder: Path) -> dict:
    """Parameters and bytes a decode step reads, from the model folder's safetensors headers.

    Quantised weights (a `.weight` beside `.scales`) count `32 / bits` parameters per packed
    uint32; their scales and biases are read but are not multiply-accumulate weights.
    """
    folder = Path(folder)
    tensors: dict[str, dict] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(safetensors_header(path))
    if not tensors:
        raise ValueError(f"{folder} holds no .safetensors weights")
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    bits = (config.get("quantization") or {}).get("bits")

    def nbytes(t: dict) -> int:
        start, end = t["data_offsets"]
        return end - start

    def params(name: str, t: dict) -> int:
        count = 1
        for d in t["shape"]:
            count *= d
        if name.endswith(".scales") or name.endswith(".biases") and name.removesuffix(".biases") + ".scales" in tensors:
            return 0
        if bits and name.endswith(".weight") and name.removesuffix(".weight") + ".scales" in tensors:
            return count * 32 // bits
        return count

    embed = [n for n in tensors if n.endswith("embed_tokens.weight")]
    tied = not any(n.endswith("lm_head.weight") for n in tensors)
    # An untied input embedding is only looked up (b rows per step): not read, not multiplied.
    looked_up = set() if tied else {n for n in tensors for e in embed if n.startswith(e.removesuffix(".weight"))}
    total_params = sum(params(n, t) for n, t in tensors.items())
    total_bytes = sum(nbytes(t) for t in tensors.values())
    step_params = sum(params(n, t) for n, t in tensors.items() if n not in looked_up)
    return {"parameters": total_params, "weight_bytes": total_bytes,
            "bytes_per_step": sum(nbytes(t) for n, t in tensors.items() if n not in looked_up),
            "flops_per_token": 2 * step_params, "tied_embeddings": tied,
            "quantization_bits": bits}


def step_bound(roofline: dict, batch: int) -> dict:
    """The decode-step bound at batch `batch` (module docstring): seconds, tok/s, and which limit binds."""
    model = roofline["model"]
    t_mem = model["bytes_per_step"] / (roofline["bandwidth"]["bound_gbs"] * 1e9)
    t_flop = batch * model["flops_per_token"] / (roofline["gemm"]["gflops"] * 1e9)
    t = max(t_mem, t_flop)
    return {"batch": batch, "step_s": t, "tok_per_s": batch / t,
            "bound_by": "bandwidth" if t_mem >= t_flop else "compute"}


def case_bound(roofline: dict, batch: int, *, prompt_tokens: float, output_tokens: float) -> dict:
    """The bound of a whole case (module docstring): b requests of `prompt_tokens` freshly
    prefilled and `output_tokens` answered, each on average."""
    model = roofline["model"]
    prefill = max(model["bytes_per_step"] / (roofline["bandwidth"]["bound_gbs"] * 1e9),
                  batch * prompt_tokens * model["flops_per_token"] / (roofline["gemm"]["gflops"] * 1e9))
    t = prefill + max(0.0, output_tokens - 1) * step_bound(roofline, batch)["step_s"]
    return {"batch": batch, "case_s": t, "prefill_s": prefill, "tok_per_s": batch * output_tokens / t}


FORMULA = ("t_bound(b) = max(bytes_per_step / bandwidth.bound_gbs, b * flops_per_token / gemm.gflops); "
           "bound tok/s = b / t_bound(b); b = the case's concurrency (capped at the server's max_concurrency); "
           "attention, norms and sampling left out")


def roofline(*, preload: str | None, model_folder: Path, dtype: str) -> dict:
    """The manifest's roofline block: the machine measured now, the model's size, the formula."""
    probe_dtype = "float32" if dtype in (None, "", "auto") else dtype
    block = measure(preload=preload, dtype=probe_dtype)
    block["model"] = model_size(model_folder)
    block["formula"] = FORMULA
    return block
