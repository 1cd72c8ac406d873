"""The client x capability matrix of a contracts run, rendered from summary.json's `contracts`
block (the cells) and the run's artifacts folder (screenshots, transcripts)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

CONTRACTS_RECOMPUTE = (
    "python -c \"import pandas as pd; r=pd.read_json('raw.jsonl',lines=True,dtype=False); "
    "c=r[r.type=='contract_case']; print(c.pivot_table(index='client',columns='capability',values='status',"
    "aggfunc=lambda s: max(s, key=['pass','conditional','blocked','fail'].index)))\""
)
NOTE = ("Each cell is the worst of its cases: fail, then blocked, then conditional, then pass; every non-pass "
        "cell says why. A case passes when the real client program got through AND every response and stream "
        "event we sent it validated against the official SDK types in strict mode (unknown fields included). "
        "What each client sent (paths, headers without secrets, body fields and sizes) is in raw.jsonl.")
SYMBOL = {"pass": "pass", "conditional": "conditional", "fail": "FAIL", "blocked": "blocked"}


def matrix_rows(block: dict) -> tuple[list[str], list[list[str]]]:
    cells = {(c["client"], c["capability"]): c for c in block["cells"]}
    rows = [[client] + [SYMBOL[cells[(client, cap)]["status"]] if (client, cap) in cells else "-"
                        for cap in block["capabilities"]] for client in block["clients"]]
    return ["client", *block["capabilities"]], rows


def reason_lines(block: dict) -> list[str]:
    out = []
    for c in block["cells"]:
        if c["status"] != "pass":
            cond = f" (condition: {c['condition']})" if c.get("condition") else ""
            out.append(f"{c['client']} / {c['capability']}: {c['status']}{cond}: {c['reason']}")
    totals = block.get("totals") or {}
    out.append("cells: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    return out


def artifacts(run_path: Any) -> list[str]:
    if run_path is None:
        return []
    folder = Path(run_path) / "artifacts"
    return sorted(str(p.relative_to(run_path)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def markdown(block: dict, *, run_path: Any, row=lambda cells: "| " + " | ".join(cells) + " |") -> list[str]:
    head, rows = matrix_rows(block)
    out = ["", "Client contracts:", "", row(head), "|" + "---|" * len(head), *[row(r) for r in rows], ""]
    out += [f"- {line}" for line in reason_lines(block)]
    out += [f"- artifact: `{a}`" for a in artifacts(run_path)]
    return out + ["", NOTE]


def html_section(block: dict, *, run_path: Any) -> str:
    e = html.escape
    head, rows = matrix_rows(block)
    parts = ["<h3>Client contracts</h3><table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    parts += ["<tr>" + "".join(f'<td class="{e(c.lower())}">{e(c)}</td>' for c in r) + "</tr>" for r in rows]
    parts.append("</table><ul>" + "".join(f"<li>{e(x)}</li>" for x in reason_lines(block)) + "</ul>")
    for name in artifacts(run_path):
        if name.endswith(".png"):
            parts.append(f'<p>{e(name)}:<br><img src="{e(_relative(run_path, name))}" style="max-width:100%"></p>')
        else:
            parts.append(f"<p>artifact: {e(name)}</p>")
    parts.append(f'<p class="note">{e(NOTE)}</p>')
    return "".join(parts)


def _relative(run_path: Any, name: str) -> str:
    """The image as reports/index.html reaches it: ../evidence/<model>/<profile>/<run>/<name>."""
    return str(Path("..", "evidence", *Path(run_path).parts[-3:], name))
