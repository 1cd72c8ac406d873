"""Raw contract_case records -> the summary's `contracts` block: the client x capability matrix.

A cell is its worst case: fail, then blocked, then conditional, then pass. Its reason is that
case's (several cases with the same status: their reasons joined), so every non-pass cell says why.
Columns are the capabilities any client was checked for, in CAPABILITIES order; rows are
clients in the order they ran.
"""

from __future__ import annotations

from collections import Counter

from .cases import CAPABILITIES

SEVERITY = {"fail": 3, "blocked": 2, "conditional": 1, "pass": 0}


def cell(records: list[dict]) -> dict:
    worst = max(SEVERITY[r["status"]] for r in records)
    chosen = [r for r in records if SEVERITY[r["status"]] == worst]
    reasons = list(dict.fromkeys(f"{r['action']}: {r['reason']}" for r in chosen))
    conditions = list(dict.fromkeys(r["condition"] for r in chosen if r["condition"]))
    return {"client": records[0]["client"], "capability": records[0]["capability"], "status": chosen[0]["status"],
            "reason": "; ".join(reasons), "condition": "; ".join(conditions) or None, "cases": len(records)}


def summarize_contracts(records: list[dict]) -> dict:
    cases = [r for r in records if r.get("type") == "contract_case"]
    clients = list(dict.fromkeys(r["client"] for r in cases))
    seen = {r["capability"] for r in cases}
    capabilities = [c for c in CAPABILITIES if c in seen]
    cells = []
    for client in clients:
        for capability in capabilities:
            mine = [r for r in cases if r["client"] == client and r["capability"] == capability]
            if mine:
                cells.append(cell(mine))
    totals = Counter(c["status"] for c in cells)
    return {"capabilities": capabilities, "clients": clients, "cells": cells,
            "totals": {s: totals.get(s, 0) for s in SEVERITY}}
