"""The report's roofline section: per (server, case), achieved tok/s against the bounds the
manifest's measured roofline sets (harness/roofline.py has the formulas): the decode step's,
and the whole case's, which adds the prompts' prefill."""

from __future__ import annotations

import html
from typing import Callable

from .roofline import case_bound, step_bound
from .report_format import pct

HEAD = ("server", "case", "batch b", "bound tok/s", "bound by", "output tok/s", "achieved / bound",
        "decode tok/s (b / ITL p50)", "decode / bound", "case bound tok/s", "output / case bound")


def _num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"



def machine_line(roof: dict) -> str:
    bw, gemm, model = roof["bandwidth"], roof["gemm"], roof["model"]
    return (f"Measured on {roof['device']} ({roof['dtype']}) through MLX with our server's BLAS: GEMM "
            f"{gemm['gflops']:.0f} GFLOP/s ({gemm['n']}^3); bandwidth {bw['bound_gbs']:.1f} GB/s (best of: "
            f"sum read {bw.get('read_gbs', 0):.1f}, copy {bw.get('copy_gbs', 0):.1f}, one-row product "
            f"{bw.get('gemv_gbs', 0):.1f}). Model: {model['parameters'] / 1e6:.1f}M parameters, "
            f"{model['bytes_per_step'] / 1e6:.0f} MB read and {model['flops_per_token'] / 1e6:.0f} MFLOP per token "
            f"per step{' (tied embeddings)' if model.get('tied_embeddings') else ''}.")


def rows(man: dict, summary: dict, concurrency: dict) -> list[list[str]]:
    """One row per (server, case) that produced output tokens at a known concurrency."""
    roof = man.get("roofline") or {}
    if "gemm" not in roof:
        return []
    cap = ((man.get("profile") or {}).get("flags") or {}).get("max_concurrency")
    out = []
    for g in summary.get("groups") or []:
        key = (g.get("server"), g.get("case"))
        metrics = g.get("metrics") or {}
        achieved = (metrics.get("output_tok_per_s") or {}).get("median")
        if key not in concurrency or not achieved:
            continue
        b = min(concurrency[key], cap) if cap else concurrency[key]
        bound = step_bound(roof, b)
        itl = (metrics.get("itl_p50_s") or {}).get("median")
        decode = b / itl if itl else None
        shape = _request_shape(g)
        case = case_bound(roof, b, prompt_tokens=shape[0], output_tokens=shape[1]) if shape else None
        out.append([str(key[0]), str(key[1]), str(b), _num(bound["tok_per_s"]), bound["bound_by"], _num(achieved),
                    pct(achieved / bound["tok_per_s"]), _num(decode),
                    pct(decode / bound["tok_per_s"]) if decode else "n/a",
                    _num(case["tok_per_s"]) if case else "n/a", pct(achieved / case["tok_per_s"]) if case else "n/a"])
    return out


def _request_shape(group: dict) -> tuple[float, float] | None:
    """(prompt tokens prefilled, answer tokens) per request, on average: the prompt from the
    group's prompt-cache counts (cached tokens are not prefilled), the answer from how total tok/s
    exceeds output tok/s (total counts prompt tokens too). None where a run recorded neither."""
    cache = group.get("prompt_cache") or {}
    metrics = group.get("metrics") or {}
    out = (metrics.get("output_tok_per_s") or {}).get("median")
    total = (metrics.get("total_tok_per_s") or {}).get("median")
    if not cache.get("requests") or not out or not total or total <= out:
        return None
    prompt = cache["prompt_tokens"] / cache["requests"]
    answer = prompt / (total / out - 1)
    return (cache["prompt_tokens"] - cache.get("cached_tokens", 0)) / cache["requests"], answer


NOTE = ("bound = b / max(bytes_per_step / bandwidth, b x flops_per_token / GEMM FLOP/s): the weights read once per "
        "step, 2 FLOPs per weight per sequence, attention, norms and sampling left out (so the bound is optimistic). "
        "output tok/s includes prefill and queueing, which this decode-step bound leaves out; b / ITL p50 is the steady "
        "decode rate of b streams. The case bound adds the prompts: b prompts of P fresh tokens prefilled at the "
        "roofline, then N - 1 decode steps, for b x N answer tokens (P and N per request, from the run's counts).")


def html_section(man: dict, summary: dict, concurrency: dict, *, tr: Callable[..., str]) -> str:
    roof = man.get("roofline") or {}
    if "error" in roof:
        return f"<h3>Roofline</h3><p class=\"note\">not measured: {html.escape(roof['error'])}</p>"
    table = rows(man, summary, concurrency)
    if not table:
        return ""
    return ("<h3>Roofline: achieved / bound</h3><p>" + html.escape(machine_line(roof)) + "</p><table>"
            + tr(list(HEAD), "th") + "".join(tr(r) for r in table) + f'</table><p class="note">{html.escape(NOTE)}</p>')


def markdown(man: dict, summary: dict, concurrency: dict, *, row: Callable[[list[str]], str]) -> list[str]:
    roof = man.get("roofline") or {}
    if "error" in roof:
        return ["", f"Roofline not measured: {roof['error']}"]
    table = rows(man, summary, concurrency)
    if not table:
        return []
    return (["", "Roofline, achieved / bound: " + machine_line(roof), "", row(list(HEAD)), "|" + "---|" * len(HEAD)]
            + [row(r) for r in table] + ["", NOTE])
