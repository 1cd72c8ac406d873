"""The report's step-profile section (summary block "profile", harness/profile_summary.py)."""

from __future__ import annotations

import html
from typing import Callable

from .profile_summary import FORWARD_GROUPS
from .roofline import step_bound

PROFILE_RECOMPUTE = (
    "python -c \"import pandas as pd; r=pd.read_json('raw.jsonl',lines=True,dtype=False); "
    "print((r[r.type=='step_part'].groupby(['batch','group','part']).seconds.median()*1000).round(3))\""
)
STEP_HEAD = ("batch", "engine step ms", "forward, whole graph ms", "forward parts summed ms", "log-softmax + argmax ms",
             "outside the forward ms (device idle)", "host per token ms", "ops per step")
GROUP_HEAD = ("batch", *FORWARD_GROUPS)
PART_HEAD = ("batch", "group", "part", "median ms", "95% interval ms", "n", "calls per step")
NOTE = ("Each part runs alone on the shapes a decode step gives it (b x 1 x hidden, the layer's real KV cache), with an "
        "mx.eval after each call, summed over the layers: each carries one eval's overhead per layer, so the parts "
        "summed run above the whole graph where that overhead matters. 'Outside the forward' = engine step (mlx-lm's "
        "BatchGenerator.next) - whole forward - log-softmax/argmax: host work inside the step with the device idle "
        "(negative: the step overlaps its own work through async eval). 'Host per token' = our engine's and API's "
        "Python for b streams (detokenise, stop-string search, event delivery, SSE encoding). Intervals: binomial "
        "order statistics for the median.")


def _ms(x) -> str:
    return "n/a" if x is None else f"{1000 * x:.3g}" if abs(1000 * x) < 100 else f"{1000 * x:.0f}"


BOUND_HEAD = ("roofline bound ms", "bound / engine step")


def _bound(roof: dict | None, s: dict) -> list[str]:
    if not roof or "gemm" not in roof:
        return []
    bound = step_bound(roof, s["batch"])
    ratio = f"{100 * bound['step_s'] / s['engine_step_s']:.0f}%" if s["engine_step_s"] else "n/a"
    return [f"{_ms(bound['step_s'])} ({bound['bound_by']})", ratio]


def step_head(roof: dict | None) -> list[str]:
    return [*STEP_HEAD, *(BOUND_HEAD if roof and "gemm" in roof else ())]


def step_rows(block: dict, roof: dict | None = None) -> list[list[str]]:
    return [[str(s["batch"]), _ms(s["engine_step_s"]), _ms(s["forward_whole_s"]), _ms(s["forward_parts_sum_s"]),
             _ms(s["sampling_s"]), _ms(s["outside_forward_s"]), _ms(s["host_per_token_s"]),
             "n/a" if s["ops"] is None else str(s["ops"]), *_bound(roof, s)] for s in block.get("steps") or []]


def group_rows(block: dict) -> list[list[str]]:
    out = []
    for s in block.get("steps") or []:
        groups, total = s.get("by_group_s") or {}, s.get("forward_parts_sum_s")
        if not groups or not total:
            continue
        out.append([str(s["batch"])] + [f"{_ms(groups[g])} ({100 * groups[g] / total:.0f}%)" if g in groups else "n/a"
                                        for g in FORWARD_GROUPS])
    return out


def part_rows(block: dict) -> list[list[str]]:
    return [[str(p["batch"]), p["group"], p["part"], _ms(p["median_s"]),
             "n/a" if p["ci_low_s"] is None else f"[{_ms(p['ci_low_s'])}, {_ms(p['ci_high_s'])}]", str(p["n"]),
             str(p["calls_per_step"])] for p in block.get("parts") or []]


def _roofline_line(roof: dict | None) -> str:
    if not roof:
        return ""
    if "error" in roof:
        return f"Roofline not measured: {roof['error']}"
    from .report_roofline import machine_line
    return machine_line(roof) + " Bound: " + roof.get("formula", "")


def html_section(block: dict, *, tr: Callable[..., str], roofline: dict | None = None) -> str:
    out = ["<h3>One decode step</h3>", f"<p>{html.escape(_roofline_line(roofline))}</p>" if roofline else "",
           "<table>", tr(step_head(roofline), "th"), *(tr(r) for r in step_rows(block, roofline)), "</table>"]
    if groups := group_rows(block):
        out += ["<h3>The forward by layer part, ms (share of the parts summed)</h3><table>", tr(list(GROUP_HEAD), "th"),
                *(tr(r) for r in groups), "</table>"]
    out += ["<h3>Every part</h3><table>", tr(list(PART_HEAD), "th"), *(tr(r) for r in part_rows(block)), "</table>",
            f'<p class="note">{html.escape(NOTE)}</p>']
    return "\n".join(out)


def markdown(block: dict, *, row: Callable[[list[str]], str], roofline: dict | None = None) -> list[str]:
    head = step_head(roofline)
    out = ["", "One decode step:" + (f" {_roofline_line(roofline)}" if roofline else ""), "", row(head),
           "|" + "---|" * len(head)]
    out += [row(r) for r in step_rows(block, roofline)]
    if groups := group_rows(block):
        out += ["", "The forward by layer part, ms (share of the parts summed):", "", row(list(GROUP_HEAD)),
                "|" + "---|" * len(GROUP_HEAD)] + [row(r) for r in groups]
    out += ["", "Every part:", "", row(list(PART_HEAD)), "|" + "---|" * len(PART_HEAD)]
    out += [row(r) for r in part_rows(block)] + ["", NOTE]
    return out
