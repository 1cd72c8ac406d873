"""Where one decode step's time goes, measured in this process (which must already carry the
server's BLAS: harness/profile_step.py starts it with the preload our server would choose).

For each batch size b, on a KV cache prefilled with `context` tokens per sequence:
- the model forward, part by part: each submodule of every layer run alone on the shapes a
  decode step gives it (hidden states b x 1 x d, the layer's real cache), with an mx.eval
  barrier after each, summed over the layers (so each part carries one eval's overhead per
  layer, which the whole graph does not pay: "forward, whole graph" is measured too);
- sampling (log-softmax and argmax, as mlx-lm's BatchGenerator does), a repetition-penalty
  logits processor (mlx-lm runs processors per sequence, in Python), and the host sync;
- the host's per-token work in our engine and API: streaming detokenisation, the stop-string
  search and hold-back (serving/engine/text_stream.py), event delivery (a RequestHandle's
  queue), and SSE encoding of an OpenAI chat chunk;
- the real engine step: mlx-lm's BatchGenerator.next() with b sequences decoding, and beside it
  our default batch step's (BatchGenerator with engine.lean_step) and our compiled bucketed
  step's (`--decode-step compiled`);
- the ops in one decode step's graph (mx.export_to_dot), by primitive.

Each timing is one record per repeat; harness/profile_summary.py turns them into medians with
distribution-free intervals and derives the host time around the forward (the device idle).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

FORWARD = "forward"
SAMPLING = "sampling"
HOST = "host"
ENGINE = "engine"
STOP_STRINGS = ("\n\nUser:", "</answer>", "###")
TEXT = ("The sea is a mirror of the sky, and the wind writes on it in a hand that only the gulls "
        "can read. Morning comes slowly over the harbour; the boats lean on their ropes. ") * 8


def _timer(mx) -> Callable[[Callable[[], object]], float]:
    def timed(fn):
        t = time.perf_counter()
        mx.eval(fn())
        return time.perf_counter() - t
    return timed


def _record(batch: int, part: str, group: str, repeat: int, seconds: float, calls: int) -> dict:
    return {"type": "step_part", "batch": batch, "part": part, "group": group, "repeat": repeat,
            "seconds": seconds, "calls_per_step": calls}


def _layers_are_llama_like(model) -> bool:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        return False
    layer = layers[0]
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    return all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "rope", "n_heads", "n_kv_heads",
                                          "scale")) and \
        all(hasattr(mlp, a) for a in ("gate_proj", "up_proj", "down_proj")) and \
        hasattr(layer, "input_layernorm") and hasattr(layer, "post_attention_layernorm")


def _lm_head(model):
    inner = model.model
    if getattr(model, "lm_head", None) is not None:
        return model.lm_head
    return inner.embed_tokens.as_linear


def forward_parts(model, cache, x, *, batch: int, repeats: int) -> list[dict]:
    """The layer parts, each alone on decode-step shapes, summed over layers (one record per repeat)."""
    import mlx.core as mx
    import mlx.nn as nn

    timed = _timer(mx)
    inner = model.model
    layers = inner.layers
    b = x.shape[0]
    prepared = []
    for layer, c in zip(layers, cache):
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
        keys, values = c.keys_and_values()  # the layer's real cache, `context` tokens long
        mx.eval(h, q, k, v, keys, values)
        prepared.append((layer, attn, h, q, k, v, keys, values, c.offset))

    def attention_core(attn, q, k, v, keys, values, offset):
        qh = attn.rope(q.reshape(b, 1, attn.n_heads, -1).transpose(0, 2, 1, 3), offset=offset)
        kh = attn.rope(k.reshape(b, 1, attn.n_kv_heads, -1).transpose(0, 2, 1, 3), offset=offset)
        vh = v.reshape(b, 1, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
        kk, vv = mx.concatenate([keys, kh], axis=2), mx.concatenate([values, vh], axis=2)
        out = mx.fast.scaled_dot_product_attention(qh, kk, vv, scale=attn.scale, mask=None)
        return out.transpose(0, 2, 1, 3).reshape(b, 1, -1)

    attn_out = [attention_core(a, q, k, v, ks, vs, off) for (_, a, _, q, k, v, ks, vs, off) in prepared]
    mx.eval(attn_out)
    gate = [layer.mlp.gate_proj(layer.post_attention_layernorm(x)) for layer in layers]
    up = [layer.mlp.up_proj(layer.post_attention_layernorm(x)) for layer in layers]
    mx.eval(gate, up)
    act = [nn.silu(g) * u for g, u in zip(gate, up)]
    mx.eval(act)

    per_layer: list[tuple[str, str, Callable[[int], object]]] = [
        ("input_layernorm", "norms", lambda i: layers[i].input_layernorm(x)),
        ("q_proj", "projections", lambda i: prepared[i][1].q_proj(prepared[i][2])),
        ("k_proj", "projections", lambda i: prepared[i][1].k_proj(prepared[i][2])),
        ("v_proj", "projections", lambda i: prepared[i][1].v_proj(prepared[i][2])),
        ("attention core (rope, KV append, sdpa)", "attention", lambda i: attention_core(*prepared[i][1:2],
                                                                                       *prepared[i][3:9])),
        ("o_proj", "projections", lambda i: prepared[i][1].o_proj(attn_out[i])),
        ("residual adds", "other", lambda i: (x + prepared[i][2]) + x),
        ("post_attention_layernorm", "norms", lambda i: layers[i].post_attention_layernorm(x)),
        ("gate_proj", "mlp", lambda i: layers[i].mlp.gate_proj(prepared[i][2])),
        ("up_proj", "mlp", lambda i: layers[i].mlp.up_proj(prepared[i][2])),
        ("activation (silu x up)", "mlp", lambda i: nn.silu(gate[i]) * up[i]),
        ("down_proj", "mlp", lambda i: layers[i].mlp.down_proj(act[i])),
    ]
    once: list[tuple[str, str, Callable[[], object]]] = [
        ("embedding lookup", "other", lambda: inner.embed_tokens(mx.zeros((b, 1), dtype=mx.int32))),
        ("final norm", "norms", lambda: inner.norm(x)),
        ("lm_head", "lm_head", lambda: _lm_head(model)(inner.norm(x))),
    ]
    records = []
    n = len(layers)
    for name, _, fn in per_layer:  # warm each part up once over all layers
        for i in range(n):
            mx.eval(fn(i))
    for name, _, fn in once:
        mx.eval(fn())
    for r in range(repeats):
        for name, group, fn in per_layer:
            records.append(_record(batch, name, group, r, sum(timed(lambda i=i: fn(i)) for i in range(n)), n))
        for name, group, fn in once:
            records.append(_record(batch, name, group, r, timed(fn), 1))
    return records


def whole_forward(model, cache, tokens, *, batch: int, repeats: int) -> tuple[list[dict], object]:
    """One decode step's forward as one graph, its cache entry trimmed back after each repeat."""
    import mlx.core as mx

    records, logits = [], None
    for r in range(-2, repeats):
        t = time.perf_counter()
        logits = model(tokens, cache=cache)[:, -1, :]
        mx.eval(logits)
        seconds = time.perf_counter() - t
        for c in cache:
            c.trim(1)
        if r >= 0:
            records.append(_record(batch, "forward, whole graph", "whole", r, seconds, 1))
    return records, logits


def sampling_parts(logits, *, batch: int, repeats: int) -> list[dict]:
    import mlx.core as mx

    from serving.engine.request import SamplingParams
    from serving.engine.sampling import build_logits_processors

    timed = _timer(mx)
    b = logits.shape[0]
    penalty = build_logits_processors(SamplingParams(repetition_penalty=1.1), context_size=256)
    context = mx.random.randint(0, logits.shape[-1], (1, 64))
    state = {}

    def sample():
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        state["tok"] = mx.argmax(lp, axis=-1)
        return state["tok"], lp

    def processors():  # mlx-lm's loop: one slice and one processor call per sequence, then a concatenate
        rows = []
        for e in range(b):
            row = logits[e:e + 1]
            for p in penalty:
                row = p(context, row)
            rows.append(row)
        return mx.concatenate(rows, axis=0)

    records = []
    for fn in (sample, processors):
        mx.eval(fn())
    for r in range(repeats):
        records.append(_record(batch, "log-softmax + argmax", SAMPLING, r, timed(sample), 1))
        records.append(_record(batch, "repetition penalty (when asked), per sequence", SAMPLING, r,
                               timed(processors), b))
        t = time.perf_counter()
        state["tok"].tolist()
        records.append(_record(batch, "host sync (tokens to Python)", SAMPLING, r, time.perf_counter() - t, 1))
    return records


def host_parts(tokenizer, *, batch: int, repeats: int) -> list[dict]:
    """Per-token Python work for b streams: detokenise, stop search, deliver, encode."""
    from serving.api.dialect import ServeContext, ServedModel
    from serving.api.openai.chat import ChatEncoder
    from serving.api.respond import sse_bytes
    from serving.config import ServerConfig
    from serving.engine.request import GenerationRequest, RequestHandle, StepOutput
    from serving.engine.text_stream import TextStream

    ids = tokenizer.encode(TEXT)
    served = ServedModel("profile", (), 2048, len(ids), "0" * 64, "profile")
    ctx = ServeContext(tokenizer=tokenizer, served=served, config=ServerConfig())
    streams = [TextStream(tokenizer.detokenizer, STOP_STRINGS) for _ in range(batch)]
    encoders = [ChatEncoder(ctx, prompt_tokens=[], include_usage=False, logprobs=False, return_token_ids=False)
                for _ in range(batch)]
    handles = [RequestHandle(GenerationRequest(prompt_tokens=[1], max_tokens=16), cancel=lambda h: None) for _ in range(batch)]
    records = []
    for r in range(-2, repeats):
        detok = stop = deliver = encode = 0.0
        for s, (stream, enc, handle) in enumerate(zip(streams, encoders, handles)):
            token = ids[(r + 2 + 7 * s) % len(ids)]
            t0 = time.perf_counter()
            stream._detok.add_token(token)
            t1 = time.perf_counter()
            text = stream._release(final=False)
            t2 = time.perf_counter()
            handle.put(StepOutput((token,), text))
            handle.events.get_nowait()
            t3 = time.perf_counter()
            for frame in enc.step(StepOutput((token,), text or " ")):
                sse_bytes(frame)
            t4 = time.perf_counter()
            detok, stop, deliver, encode = detok + t1 - t0, stop + t2 - t1, deliver + t3 - t2, encode + t4 - t3
        if r >= 0:
            records += [_record(batch, "detokenise (streaming)", HOST, r, detok, batch),
                        _record(batch, "stop-string search and hold-back", HOST, r, stop, batch),
                        _record(batch, "event delivery (handle queue)", HOST, r, deliver, batch),
                        _record(batch, "SSE encoding (OpenAI chat chunk)", HOST, r, encode, batch)]
    return records


ENGINE_STEPS = {"batch": "engine step (mlx-lm BatchGenerator.next)",
                "lean": "engine step (ours: lean batch step)",
                "compiled": "engine step (compiled, --decode-step compiled)",
                "compiled-unfused": "engine step (compiled, projections not fused)"}


def _generator(model, *, batch: int, context: int, kind: str):
    import mlx.core as mx

    if kind.startswith("compiled"):
        from serving.engine.bucketed_step import BucketedGenerator
        return BucketedGenerator(model, stop_tokens=set(), rows=max(batch, 1), capacity=max(4096, 2 * context),
                                 prefill_step_size=512, prefill_per_step=min(batch, 8), fused=kind == "compiled")
    from mlx_lm.generate import BatchGenerator

    from serving.engine.lean_step import install_lean_step
    generator = BatchGenerator(model, stop_tokens=[], completion_batch_size=max(batch, 1),
                               prefill_batch_size=min(batch, 8), prefill_step_size=512,
                               stream=mx.default_stream(mx.default_device()))
    if kind == "lean":
        install_lean_step(generator, model)
    return generator


def engine_steps(model, *, batch: int, context: int, repeats: int, kind: str = "batch") -> list[dict]:
    """The generator's next() with b sequences decoding (what our engine thread calls): mlx-lm's
    BatchGenerator, ours over it, or the compiled step; greedy, with the engine's sampler."""
    from serving.engine.request import SamplingParams
    from serving.engine.sampling import build_sampler

    gen = _generator(model, batch=batch, context=context, kind=kind)
    prompts = [[(7 * s + i) % 1000 + 10 for i in range(context)] for s in range(batch)]
    gen.insert(prompts, max_tokens=[10 ** 6] * batch,
               samplers=[build_sampler(SamplingParams(temperature=0.0)) for _ in range(batch)])
    decoding = 0
    while decoding < batch:  # prefill until every sequence decodes
        _, responses = gen.next()
        decoding = len(responses)
    for _ in range(2):
        gen.next()
    records = []
    for r in range(repeats):
        t = time.perf_counter()
        gen.next()
        records.append(_record(batch, ENGINE_STEPS[kind], ENGINE, r, time.perf_counter() - t, 1))
    if hasattr(gen, "close"):
        gen.close()
    return records


def count_ops(model, cache, tokens, *, batch: int) -> dict:
    """The primitives in one decode step's graph, from MLX's own DOT export (nothing evaluated)."""
    import mlx.core as mx

    logits = model(tokens, cache=cache)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step.dot"
        mx.export_to_dot(str(path), logits)
        labels = re.findall(r'\[label ="([^"]+)", shape=rectangle\]', path.read_text())
    for c in cache:
        c.trim(1)
    mx.eval([c.keys_and_values() for c in cache])
    by_kind = collections.Counter(re.sub(r"\W.*", "", label) or label for label in labels)
    return {"type": "step_graph", "batch": batch, "ops": len(labels), "ops_by_primitive": dict(sorted(by_kind.items()))}


def profile(model_path: str, *, batches: list[int], repeats: int, context: int, parts: bool = True) -> dict:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import make_prompt_cache

    from serving.backend import detect_backend

    model, tokenizer = load(model_path)
    breakable = _layers_are_llama_like(model)
    records: list[dict] = []
    for b in batches:
        say(f"batch {b}: prefill {context} tokens x {b}")
        cache = make_prompt_cache(model)
        prompt = mx.array([[(3 * s + i) % 1000 + 10 for i in range(context)] for s in range(b)])
        mx.eval(model(prompt, cache=cache))
        tokens = mx.full((b, 1), 42, dtype=mx.int32)
        say(f"batch {b}: whole forward, sampling, host parts, op count")
        whole, logits = whole_forward(model, cache, tokens, batch=b, repeats=repeats)
        records += whole
        records += sampling_parts(logits, batch=b, repeats=repeats)
        records += host_parts(tokenizer, batch=b, repeats=repeats)
        records.append(count_ops(model, cache, tokens, batch=b))
        if parts and breakable:
            say(f"batch {b}: layer parts")
            x = model.model.embed_tokens(tokens)
            mx.eval(x)
            records += forward_parts(model, cache, x, batch=b, repeats=repeats)
        del cache
        say(f"batch {b}: engine steps")
        records += engine_steps(model, batch=b, context=context, repeats=repeats)
        for kind in ("lean", "compiled", "compiled-unfused"):
            records += engine_steps(model, batch=b, context=context, repeats=repeats, kind=kind)
    info = detect_backend().as_dict()
    args = getattr(model, "args", None)
    return {"records": records, "backend": info,
            "model": {"type": getattr(args, "model_type", type(model).__module__),
                      "layers": len(model.model.layers) if hasattr(model, "model") else None,
                      "parts_broken_down": breakable}}


def say(message: str) -> None:
    print(f"[profile-step] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.step_profile", description=__doc__)
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--batch", default="1,10,32")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--no-parts", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    result = profile(args.model_path, batches=batches, repeats=args.repeats, context=args.context,
                     parts=not args.no_parts)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
