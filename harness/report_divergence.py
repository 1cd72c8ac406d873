"""The report's section for divergence runs, rendered from summary.json's `divergence` block only:
a table per server and case (the noise floor, serial against serial, apart from the batch sizes)
and two figures: agreement and exact-match rate against batch size, and where tokens first diverged."""

from __future__ import annotations

import html
from collections import defaultdict

from .report_format import pct

DIVERGENCE_RECOMPUTE = (
    "python -c \"import pandas as pd; r=pd.read_json('raw.jsonl',lines=True,dtype=False); "
    "d=r[(r.type=='divergence')&r.match.notna()]; "
    "d=d.assign(exact=d.match.str['exact'],agreement=d.match.str['agreement']); "
    "print(d.groupby(['server','case','condition','batch_size'])[['exact','agreement']].mean())\""
)
NOTE = ("Each prompt is generated alone at temperature 0 (the serial reference), then inside concurrent "
        "batches with distractor prompts, then alone again (the control). Generations are compared by token "
        "id with the same run's reference. The noise floor (serial vs serial) is what the server varies with "
        "nothing else running; a batch effect is what batching adds above it. Exact: prompts whose ids matched "
        "the reference in every run, 95% Wilson interval over prompts. Agreement: the common prefix over the "
        "longer sequence's length, averaged per prompt over runs, 95% bootstrap interval over prompts; per run: "
        "t interval over runs (none with one run). Margin: the reference's top-1 minus top-2 log-probability "
        "where the tokens first diverged (below {near} nats: a near-tie). Max |Δ logprob|: the largest change "
        "of a chosen token's log-probability while the tokens still matched. Verdict: meets when the exact "
        "rate's lower bound reaches min_exact, fails when its upper bound is below it, else inconclusive.")
HEAD = ("condition", "exact match [95% Wilson]", "mean agreement [95% bootstrap]", "per run [95% t]",
        "first divergence", "margin at divergence", "max |Δ logprob|", "errors", "verdict")



def _num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def condition_label(c: dict) -> str:
    return "noise floor: serial vs serial" if c["condition"] == "control" else f"batch of {c['batch_size']}"


def _exact(c: dict) -> str:
    e = c["exact"]
    if e["rate"] is None:
        return "n/a (nothing compared)"
    return (f"{pct(e['rate'])} [{pct(e['ci_low'])}, {pct(e['ci_high'])}] ({e['prompts']}/{e['n']} prompts; "
            f"{e['comparisons_exact']}/{c['comparisons']} comparisons)")


def _agreement(c: dict) -> str:
    a = c["agreement"]
    if a["mean"] is None:
        return "n/a"
    ci = f" [{_num(a['ci_low'], 4)}, {_num(a['ci_high'], 4)}]" if a["ci_low"] is not None else ", no interval"
    return f"{_num(a['mean'], 4)}{ci} n={a['n']} prompts"


def _per_run(c: dict) -> str:
    ci = c["per_run"]["agreement_ci"]
    if ci["mean"] is None:
        return "n/a"
    interval = f" [{_num(ci['ci_low'], 4)}, {_num(ci['ci_high'], 4)}]" if ci["ci_low"] is not None else ""
    return f"agreement {_num(ci['mean'], 4)}{interval} n={ci['n']} runs"


def _first(c: dict) -> str:
    f = c["first_divergence"]
    if not f["n"]:
        return "none diverged"
    return f"median token {_num(f['median'])} (range {f['min']}–{f['max']}), n={f['n']}"


def _margin(c: dict, near: float) -> str:
    m = c["margin"]
    if not m["n"]:
        return "n/a"
    return f"median {_num(m['median'])}, min {_num(m['min'])}; {m['near_ties']} of {m['n']} below {near:g}"


def rows(block: dict) -> dict[tuple[str, str], list[list[str]]]:
    """(server, case) → table rows, the noise floor first."""
    out: dict[tuple[str, str], list[list[str]]] = defaultdict(list)
    near = block.get("near_tie_below", 0.1)
    for c in block["cells"]:
        verdict = f"{c['verdict']} (min_exact {c['min_exact']:g})"
        errors = str(c["errors"]) + (f" (+{c['reference_errors']} references failed)" if c["reference_errors"] else "")
        out[(c["server"], c["case"])].append([condition_label(c), _exact(c), _agreement(c), _per_run(c),
                                              _first(c), _margin(c, near), _num(c["max_abs_logprob_delta"]),
                                              errors, verdict])
    return out


def markdown(block: dict, *, row=lambda cells: "| " + " | ".join(cells) + " |") -> list[str]:
    out = []
    for (server, case), body in rows(block).items():
        out += ["", f"Batch divergence, {server}, case {case}:", "", row(list(HEAD)), "|" + "---|" * len(HEAD)]
        out += [row(r) for r in body]
    return out + ["", NOTE.format(near=block.get("near_tie_below", 0.1))]


def html_section(block: dict) -> str:
    e = html.escape
    parts = []
    for (server, case), body in rows(block).items():
        parts.append(f"<h3>Batch divergence: {e(server)}, case {e(case)}</h3><table>"
                     + "<tr>" + "".join(f"<th>{e(h)}</th>" for h in HEAD) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in r) + "</tr>" for r in body]
        parts.append("</table>")
    parts.append(f'<p class="note">{e(NOTE.format(near=block.get("near_tie_below", 0.1)))}</p>')
    return "".join(parts)


def _short(c: dict) -> list[str]:
    e, a, f = c["exact"], c["agreement"], c["first_divergence"]
    exact = "n/a" if e["rate"] is None else (f"{100 * e['rate']:.0f}% [{100 * e['ci_low']:.0f}, "
                                             f"{100 * e['ci_high']:.0f}] {e['prompts']}/{e['n']}")
    agree = "n/a" if a["mean"] is None else (f"{a['mean']:.4f}" + (f" [{a['ci_low']:.4f}, {a['ci_high']:.4f}]"
                                                                   if a["ci_low"] is not None else ""))
    first = "-" if not f["n"] else f"{_num(f['median'])} ({f['min']}–{f['max']}) n={f['n']}"
    margin = "-" if not c["margin"]["n"] else f"{_num(c['margin']['median'])} ({c['margin']['near_ties']} ties)"
    return [condition_label(c).replace("noise floor: ", ""), exact, agree, first, margin,
            _num(c["max_abs_logprob_delta"], 2), str(c["errors"]), c["verdict"]]


def console_table(block: dict):
    """A terminal-width version of the table: exact % [Wilson], agreement [bootstrap], verdicts."""
    from rich.table import Table

    table = Table(title="batch divergence: token ids against the serial reference (95% intervals)",
                  caption="serial vs serial = the noise floor; verdict: exact rate's Wilson bounds against min_exact")
    for col in ("server", "case", "condition", "exact (prompts)", "agreement", "1st divergence", "margin",
                "max |Δlp|", "err", "verdict"):
        table.add_column(col)
    for c in block["cells"]:
        table.add_row(c["server"], c["case"], *_short(c))
    return table


def _series(cells: list[dict], key: str) -> tuple[list, list, list, list]:
    xs, ys, lo, hi = [], [], [], []
    for c in cells:
        block = c[key]
        value = block["rate"] if key == "exact" else block["mean"]
        if value is None:
            continue
        xs.append(c["batch_size"])
        ys.append(value)
        lo.append(max(value - block["ci_low"], 0) if block["ci_low"] is not None else 0)
        hi.append(max(block["ci_high"] - value, 0) if block["ci_high"] is not None else 0)
    return xs, ys, lo, hi


def agreement_figure(cells: list[dict], title: str) -> bytes | None:
    """Mean agreement and exact-match rate against batch size, the noise floor as a band."""
    from matplotlib.ticker import NullLocator

    from .report_figures import _new_figure, _png

    batches = [c for c in cells if c["condition"] == "batch" and c["agreement"]["mean"] is not None]
    control = next((c for c in cells if c["condition"] == "control"), None)
    if not batches:  # nothing batched was compared (every request failed): no figure to draw
        return None
    fig = _new_figure(9.0, 3.8)
    for col, (key, label) in enumerate((("agreement", "mean agreement (95% bootstrap CI)"),
                                        ("exact", "exact-match rate (95% Wilson CI)"))):
        ax = fig.add_subplot(1, 2, col + 1)
        xs, ys, lo, hi = _series(batches, key)
        if xs:
            n = max(c["n_prompts"] for c in batches)
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="-o", capsize=3,
                        label=f"batched vs serial reference (n={n} prompts)")
        if control is not None:
            (_, cy, clo, chi) = _series([control], key)
            if cy:
                ax.axhline(cy[0], color="#57606a", linestyle="--", linewidth=1,
                           label=f"noise floor: serial vs serial (n={control['n_prompts']})")
                ax.axhspan(cy[0] - clo[0], cy[0] + chi[0], color="#57606a", alpha=0.15)
        ticks = sorted({c["batch_size"] for c in batches})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("batch size (the prompt + distractors, log2 scale)")
        ax.set_ylabel(label)
        ax.set_ylim(min([0.0] + [y - d for y, d in zip(ys, lo)]) if key == "exact" else None, 1.02)
        ax.set_title(title, fontsize="medium")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="lower left")
    return _png(fig)


def first_divergence_figure(cells: list[dict], title: str) -> bytes | None:
    """Where generations first diverged from their reference: counts per token index, per condition."""
    from .report_figures import _new_figure, _png

    if not cells:
        return None
    fig = _new_figure(7.0, 3.6)
    ax = fig.add_subplot()
    compared = sum(c["comparisons"] for c in cells)
    if not compared:
        return None
    shown = [c for c in cells if c["first_divergence"]["n"]]
    if not shown:
        ax.text(0.5, 0.5, f"no generation diverged from its serial reference\n({compared} comparisons)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    top = max((i for c in shown for i, _ in c["first_divergence"]["counts"]), default=0)
    width = 0.8 / max(len(shown), 1)
    for k, c in enumerate(shown):
        counts = dict((i, n) for i, n in c["first_divergence"]["counts"])
        xs = [i + (k - (len(shown) - 1) / 2) * width for i in range(top + 1)]
        ax.bar(xs, [counts.get(i, 0) for i in range(top + 1)], width=width,
               label=f"{condition_label(c)} (n={c['first_divergence']['n']} of {c['comparisons']})")
    if shown:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("index of the first divergent token")
        ax.set_ylabel("generations")
        ax.legend(fontsize="small")
        ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title, fontsize="medium")
    return _png(fig)


def figures(block: dict) -> list[tuple[str, bytes]]:
    """(caption, PNG) for each server and case of the block."""
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for c in block["cells"]:
        by_key[(c["server"], c["case"])].append(c)
    out = []
    for (server, case), cells in by_key.items():
        title = f"{server}, case {case}"
        if png := agreement_figure(cells, title):
            out.append((f"Agreement and exact-match rate against batch size ({title}); the dashed line and "
                        "band are the noise floor, serial against serial.", png))
        if png := first_divergence_figure(cells, title):
            out.append((f"First divergent token index per condition ({title}).", png))
    return out
