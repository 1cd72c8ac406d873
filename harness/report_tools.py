"""The report's section for tools runs: accuracy per category x mode with Wilson CIs and n, parse
fidelity, and the required-vs-auto differences, rendered from summary.json's `tools` block only."""

from __future__ import annotations

import html

from .report_format import pct

TOOLS_RECOMPUTE = (
    "python -c \"import pandas as pd; r=pd.read_json('raw.jsonl',lines=True,dtype=False); "
    "s=r[(r.type=='tool_case')&(r.status!='not_applicable')]; "
    "print(s.assign(right=s.correct.eq(True)).groupby(['category','mode']).right.agg(['mean','sum','count']))\""
)
NOTE = ("Accuracy = correct / requests sent, judged by our AST checker on BFCL's possible answers "
        "(suites/tools/checker.py); an errored request counts as not correct. 95% Wilson intervals; n = cases. "
        "n/a (not applicable): irrelevance under tool_choice required, which forces a call, is never sent. "
        "Parse fidelity: of the responses holding a complete call in any form, the share returned as "
        "structured tool calls with no call markup left in the content (a call cut off by max_tokens, or "
        "with arguments that are not JSON, is counted apart: no parser could return it). Scenarios (suites/tools/scenarios.toml): "
        "API-contract checks per dialect; an errored request counts as not passed.")


def mode_label(mode: str) -> str:
    return "response_format json_schema" if mode == "json_schema" else f"tool_choice {mode}"



def cell_text(cell: dict | None) -> str:
    if cell is None:
        return "not run"
    if not cell.get("applicable", True):
        return "n/a (not applicable)"
    if cell.get("accuracy") is None:
        return f"n/a (n={cell.get('n')})"
    errors = f", {cell['errors']} errors" if cell.get("errors") else ""
    return (f"{pct(cell['accuracy'])} [{pct(cell.get('ci_low'))}, {pct(cell.get('ci_high'))}] "
            f"n={cell.get('n')} ({cell.get('correct')} correct{errors})")


def _modes(block: dict) -> list[str]:
    return list(dict.fromkeys(c["mode"] for c in [*block.get("overall", []), *block.get("cells", [])]))


def accuracy_rows(block: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per category, then "all", one column per mode."""
    modes = _modes(block)
    cells = {(c["category"], c["mode"]): c for c in block.get("cells", [])}
    overall = {c["mode"]: c for c in block.get("overall", [])}
    rows = [[cat] + [cell_text(cells.get((cat, m))) for m in modes]
            for cat in dict.fromkeys(c["category"] for c in block.get("cells", []))]
    rows.append(["all"] + [cell_text(overall.get(m)) for m in modes])
    return ["category"] + [mode_label(m) for m in modes], rows


def fidelity_lines(block: dict) -> list[str]:
    out = []
    for pf in block.get("parse_fidelity", []):
        label = "all modes" if pf["mode"] == "*" else mode_label(pf["mode"])
        ci = f" [{pct(pf['ci_low'])}, {pct(pf['ci_high'])}]" if pf.get("ci_low") is not None else ""
        cut = f"; {pf['cut_off']} more held only a cut-off or non-JSON call" if "cut_off" in pf else ""
        out.append(f"Parse fidelity, {label}: {pct(pf.get('fidelity'))}{ci}, "
                   f"n={pf.get('n')} responses with a call ({pf.get('clean')} clean){cut}")
    for sv in block.get("schema_validity", []):
        ci = f" [{pct(sv['ci_low'])}, {pct(sv['ci_high'])}]" if sv.get("ci_low") is not None else ""
        what = "outputs" if sv["mode"] == "json_schema" else "calls"
        out.append(f"Schema-valid {what}, {mode_label(sv['mode'])}: {pct(sv.get('rate'))}{ci}, "
                   f"{sv.get('valid')} of n={sv.get('n')} requests")
    return out


def difference_lines(block: dict) -> list[str]:
    out = []
    for d in block.get("differences", []):
        p = "n/a" if d.get("p_value") is None else f"{d['p_value']:.3g}"
        category = "all categories" if d["category"] == "*" else d["category"]
        out.append(f"{category}: {d['a']} {pct(d['accuracy_a'])} vs {d['b']} {pct(d['accuracy_b'])}, "
                   f"difference {100 * d['difference']:+.1f} points over n={d['n_pairs']} paired cases "
                   f"({d['a_only']} right only under {d['a']}, {d['b_only']} only under {d['b']}; "
                   f"{d.get('test')}: p={p})")
    return out


def scenario_lines(block: dict) -> list[str]:
    """Scenarios (API contract per dialect): passed / n with Wilson intervals, then each failure."""
    sc = block.get("scenarios")
    if not sc:
        return []
    out = []
    for c in [*sc["dialects"], sc["overall"]]:
        label = "all dialects" if c["dialect"] == "*" else c["dialect"]
        ci = f" [{pct(c['ci_low'])}, {pct(c['ci_high'])}]" if c.get("ci_low") is not None else ""
        errors = f", {c['errors']} errors" if c.get("errors") else ""
        out.append(f"Scenarios, {label}: {pct(c.get('rate'))}{ci}, {c['passed']} of n={c['n']} passed{errors}")
    out += [f"Scenario {f['id']} not passed ({f['status']}): {f['reason']}" for f in sc.get("failed", [])]
    return out


def markdown(block: dict, *, row=lambda cells: "| " + " | ".join(cells) + " |") -> list[str]:
    head, rows = accuracy_rows(block)
    out = ["", "Tool calling (BFCL):", "", row(head), "|" + "---|" * len(head)]
    out += [row(r) for r in rows]
    lines = fidelity_lines(block) + difference_lines(block) + scenario_lines(block)
    out += ["", *[f"- {line}" for line in lines], "", NOTE]
    return out


def html_section(block: dict) -> str:
    e = html.escape
    head, rows = accuracy_rows(block)
    parts = ["<h3>Tool calling (BFCL)</h3><table>",
             "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
    parts.append("</table><ul>" + "".join(f"<li>{e(x)}</li>" for x in fidelity_lines(block) + difference_lines(block)
                                      + scenario_lines(block))
                 + f'</ul><p class="note">{e(NOTE)}</p>')
    return "".join(parts)
