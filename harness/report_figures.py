"""Figures for the evidence report: matplotlib (Agg canvas, no pyplot) to PNG bytes.

Every function draws only from stored evidence and returns None when the data
do not support the figure (too few points, nothing measured).
"""

from __future__ import annotations

import io
from collections import defaultdict

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

_VERDICT_COLOR = {"faster": "#1a7f37", "slower": "#cf222e"}
_NEUTRAL = "#57606a"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def throughput_vs_concurrency(groups: list[dict], concurrency: dict[tuple[str, str], int],
                              metric: str = "output_tok_per_s") -> bytes | None:
    """Median `metric` with its 95% CI per server, against each group's concurrency (log2 x)."""
    series: dict[str, list[tuple]] = defaultdict(list)
    for g in groups:
        m = (g.get("metrics") or {}).get(metric)
        c = concurrency.get((g.get("server"), g.get("case")))
        if not m or c is None or m.get("median") is None:
            continue
        series[g["server"]].append((c, m["median"], m.get("ci_low"), m.get("ci_high"), m.get("n")))
    xs_all = sorted({p[0] for pts in series.values() for p in pts})
    if len(xs_all) < 2:
        return None
    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    k = len(series)
    for i, (server, pts) in enumerate(sorted(series.items())):
        pts.sort(key=lambda p: p[0])
        shift = 2 ** ((i - (k - 1) / 2) * 0.04)  # small dodge so error bars do not overlap
        xs = [p[0] * shift for p in pts]
        ys = [p[1] for p in pts]
        lo = [max(p[1] - p[2], 0) if p[2] is not None else 0 for p in pts]
        hi = [max(p[3] - p[1], 0) if p[3] is not None else 0 for p in pts]
        ns = sorted({p[4] for p in pts if p[4] is not None})
        n_txt = ("n unknown" if not ns else f"n={ns[0]}" if ns[0] == ns[-1]
                 else f"n={ns[0]}–{ns[-1]}")
        unique_x = len({p[0] for p in pts}) == len(pts)  # a line only if one point per concurrency
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="-o" if unique_x else "o", capsize=3,
                    label=f"{server} ({n_txt} repeats)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs_all, [str(x) for x in xs_all])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("concurrency (requests in flight, log2 scale)")
    ax.set_ylabel(f"{metric.replace('_per_s', '/s').replace('_', ' ')} (median, 95% CI)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)


def pick_distribution_case(records: list[dict]) -> str | None:
    """The case with ok TTFTs from the most servers, then the most ok requests."""
    per_case: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        if r.get("type") == "request" and r.get("status") == "ok" and r.get("ttft_s") is not None:
            per_case[r.get("case")][r.get("server")] += 1
    if not per_case:
        return None
    return max(per_case, key=lambda c: (sum(v >= 2 for v in per_case[c].values()),
                                        sum(per_case[c].values())))


def _ecdf(ax, values: list[float], label: str, max_points: int = 2000) -> None:
    xs = sorted(values)
    n = len(xs)
    ranks = range(n) if n <= max_points else sorted({round(i * (n - 1) / (max_points - 1))
                                                    for i in range(max_points)})
    ax.step([xs[i] for i in ranks], [(i + 1) / n for i in ranks], where="post", label=label)


def latency_distributions(records: list[dict], case: str) -> bytes | None:
    """ECDFs of TTFT and of inter-token latency per server for one case (ok requests only)."""
    ttft: dict[str, list[float]] = defaultdict(list)
    itl: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.get("type") != "request" or r.get("status") != "ok" or r.get("case") != case:
            continue
        if r.get("ttft_s") is not None:
            ttft[r["server"]].append(r["ttft_s"] * 1000)
        itl[r["server"]].extend(x * 1000 for x in (r.get("itl_s") or []) if x is not None)
    ttft = {s: v for s, v in ttft.items() if len(v) >= 2}
    itl = {s: v for s, v in itl.items() if len(v) >= 2}
    if not ttft and not itl:
        return None
    fig = _new_figure(9.0, 3.6)
    for col, (name, data, unit) in enumerate((("TTFT", ttft, "requests"), ("ITL", itl, "gaps"))):
        ax = fig.add_subplot(1, 2, col + 1)
        for server in sorted(data):
            _ecdf(ax, data[server], f"{server} (n={len(data[server])} {unit})")
        values = [v for vs in data.values() for v in vs]
        if values and min(values) > 0 and max(values) / min(values) >= 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of " + unit + " ≤ x")
        ax.set_title(f"{name}, case {case}", fontsize="medium")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        if data:
            ax.legend(fontsize="small", loc="lower right")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)


def comparison_forest(comparisons: list[dict]) -> bytes | None:
    """Forest plot: each comparison's ratio with its 95% CI, and a line at 1.0 (no difference)."""
    rows = [c for c in comparisons if c.get("ratio") is not None]
    if not rows:
        return None
    fig = _new_figure(7.0, 1.2 + 0.45 * len(rows))
    ax = fig.add_subplot()
    labels = []
    for i, c in enumerate(rows):
        y = len(rows) - 1 - i
        ratio, lo, hi = c["ratio"], c.get("ci_low"), c.get("ci_high")
        xerr = [[max(ratio - lo, 0)], [max(hi - ratio, 0)]] if lo is not None and hi is not None else None
        color = _VERDICT_COLOR.get(c.get("verdict"), _NEUTRAL)
        ax.errorbar([ratio], [y], xerr=xerr, fmt="o", capsize=4, color=color)
        ax.annotate(str(c.get("verdict") or ""), (hi if hi is not None else ratio, y), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize="small", color=color)
        cache = f", {c['cache']}" if c.get("cache") else ""
        labels.append(f"{c.get('case')}: {c.get('a')} vs {c.get('b')}, "
                      f"{c.get('metric')}{cache} (n={c.get('n_pairs')} pairs)")
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), labels[::-1])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("ratio with 95% CI (dashed line: 1.0, no difference)")
    ax.margins(x=0.25)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def run_figures(summary: dict, records: list[dict], concurrency: dict[tuple[str, str], int]
                ) -> list[tuple[str, bytes]]:
    """(caption, PNG) for each figure the run's evidence supports."""
    figs = []
    if png := throughput_vs_concurrency(summary.get("groups") or [], concurrency):
        figs.append(("Output tok/s against concurrency: medians over repeats with 95% CIs.", png))
    case = pick_distribution_case(records)
    if case is not None and (png := latency_distributions(records, case)):
        figs.append((f"TTFT and inter-token latency ECDFs for case {case} (ok requests only).", png))
    if png := comparison_forest(summary.get("comparisons") or []):
        figs.append(("Comparison ratios with 95% CIs; the dashed line is 1.0 (no difference).", png))
    if block := summary.get("divergence"):
        from .report_divergence import figures as divergence_figures
        figs += divergence_figures(block)
    return figs
