"""Where does the batch enter? One op at a time, a row alone against the same row batched.

`python -m suites.divergence.op_probe [OUT.json]` on any MLX device: a 576->1536 matmul (a row
alone, which MLX runs as a GEMV, against the same row among 2..32 rows, beside other rows, and at
another row index), RMSNorm, decode attention against padded and masked keys, and the
vocabulary logsumexp, in fp32 and bf16. It prints each comparison's largest difference; zero
means that op cannot move a sequence's numbers with its neighbours. The divergence suite
measures the whole model; this says which op is responsible.
"""

from __future__ import annotations

import json
import sys

import mlx.core as mx


def _diff(a: mx.array, b: mx.array) -> float:
    return float(mx.max(mx.abs(a.astype(mx.float32) - b.astype(mx.float32))).item())


def _probe(dt_name: str, dt, rec) -> None:
    w = (mx.random.normal((1536, 576)) * 0.05).astype(dt)
    x = mx.random.normal((32, 576)).astype(dt)
    alone = x[:1] @ w.T
    for m in (2, 4, 8, 16, 32):
        rec("matmul 576->1536", dt_name, f"row 0 alone vs among {m} rows", _diff(alone, (x[:m] @ w.T)[:1]))
    y = mx.concatenate([x[:1], mx.random.normal((31, 576)).astype(dt)])
    rec("matmul 576->1536", dt_name, "row 0 among 32 rows, other rows changed", _diff((x @ w.T)[:1], (y @ w.T)[:1]))
    moved = mx.concatenate([x[1:6], x[:1], x[6:]])
    rec("matmul 576->1536", dt_name, "row 0 at row 0 vs at row 5 of 32", _diff((x @ w.T)[:1], (moved @ w.T)[5:6]))
    g = mx.ones((576,), dtype=dt)
    rec("rms_norm", dt_name, "row 0 alone vs among 32 rows",
        _diff(mx.fast.rms_norm(x[:1], g, 1e-5), mx.fast.rms_norm(x, g, 1e-5)[:1]))

    heads, kv_heads, dim, length = 9, 3, 64, 100
    sdpa = mx.fast.scaled_dot_product_attention
    q = mx.random.normal((1, heads, 1, dim)).astype(dt)
    k = mx.random.normal((1, kv_heads, length, dim)).astype(dt)
    v = mx.random.normal((1, kv_heads, length, dim)).astype(dt)
    ref = sdpa(q, k, v, scale=dim ** -0.5)
    for pad in (28, 156, 924):
        zeros = mx.zeros((1, kv_heads, pad, dim), dtype=dt)
        left = (mx.arange(pad + length) >= pad)[None, None, None, :]
        rec("sdpa decode (q len 1)", dt_name, f"keys {length} alone vs left-padded by {pad} + mask",
            _diff(ref, sdpa(q, mx.concatenate([zeros, k], axis=2), mx.concatenate([zeros, v], axis=2),
                            scale=dim ** -0.5, mask=left)))
        right = (mx.arange(pad + length) < length)[None, None, None, :]
        rec("sdpa decode (q len 1)", dt_name, f"keys {length} alone vs right-padded by {pad} + mask",
            _diff(ref, sdpa(q, mx.concatenate([k, zeros], axis=2), mx.concatenate([v, zeros], axis=2),
                            scale=dim ** -0.5, mask=right)))
    q8 = mx.concatenate([q, mx.random.normal((7, heads, 1, dim)).astype(dt)])
    k8 = mx.concatenate([k, mx.random.normal((7, kv_heads, length, dim)).astype(dt)])
    v8 = mx.concatenate([v, mx.random.normal((7, kv_heads, length, dim)).astype(dt)])
    rec("sdpa decode (q len 1)", dt_name, "sequence 0 alone vs among 8 (same length)",
        _diff(ref, sdpa(q8, k8, v8, scale=dim ** -0.5)[:1]))
    logits = mx.random.normal((32, 49152)).astype(dt)
    rec("logsumexp over vocab", dt_name, "row 0 alone vs among 32 rows",
        _diff(mx.logsumexp(logits[:1], axis=-1), mx.logsumexp(logits, axis=-1)[:1]))


def main(argv: list[str]) -> int:
    out = {"device": str(mx.default_device()), "results": []}

    def rec(op: str, dtype: str, what: str, value: float) -> None:
        out["results"].append({"op": op, "dtype": dtype, "what": what, "max_abs_diff": value})
        print(f"{op:24s} {dtype:9s} {what:50s} {value:.3g}")

    mx.random.seed(0)
    for name, dt in (("float32", mx.float32), ("bfloat16", mx.bfloat16)):
        _probe(name, dt, rec)
    if argv:
        with open(argv[0], "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
