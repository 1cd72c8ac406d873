"""Where a gate's path points in a run's summary.json, suite by suite.

A path resolves to every number it names in a run, one per case (or batch size, or mode):
the gate holds only if it holds for each of them, so `throughput.ratio_vs["mlx-lm"].ci_low >= 0.95`
means "on every case of the run". An empty list means the run has no such number (another run
may). A path of a shape the suite does not know is a GatePathError: a mistake in the profile,
caught when the profiles are loaded, not at decision time.

throughput (summary "groups" and "comparisons"; ours is the server labelled "ours"):
  ratio_vs[PEER].FIELD              ours/PEER output tok/s, each case; FIELD ratio|ci_low|ci_high|p_value|n_pairs
  case[NAME].ratio_vs[PEER].FIELD   the same, one case
  case[NAME].METRIC.FIELD           ours' METRIC (e.g. output_tok_per_s); FIELD median|mean|ci_low|ci_high|n
  errors                            ours' requests that errored or were incomplete, all cases
divergence (summary "divergence" cells of ours):
  exact_match.FIELD                 each batch size; FIELD rate|ci_low|ci_high|prompts|n
  agreement.FIELD                   each batch size; FIELD mean|ci_low|ci_high
  max_abs_logprob_delta | verdict   each batch size
  control.<any of the above>        the serial-vs-serial noise floor instead
  batch[N].<any of the above>       one batch size
  errors                            generations not compared, every cell
tools (summary "tools"):
  parse_fidelity[MODE].FIELD        MODE default "*" (all modes); FIELD fidelity (default)|ci_low|ci_high|n|clean|cut_off
  schema_validity[MODE].FIELD       each mode unless named; FIELD rate (default)|ci_low|ci_high|n|valid
  accuracy[MODE].FIELD              each mode unless named; FIELD accuracy (default)|ci_low|ci_high|n|correct
  scenarios[DIALECT].FIELD          all dialects unless named; FIELD rate (default)|ci_low|ci_high|n|passed|errors
  errors                            requests that errored, every mode and scenario
contracts (summary "contracts"):
  CLIENT.CAPABILITY                 the cell's status: pass|conditional|fail|blocked
  CLIENT                            each of the client's cells
  totals.STATUS                     cells with that status
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .metrics import COMPARED_METRIC

SUITES = ("throughput", "divergence", "tools", "contracts")
OURS = "ours"


class GatePathError(ValueError):
    """A path its suite does not know."""


@dataclass(frozen=True)
class Found:
    value: Any
    where: str  # what the number is, in words: the case, the interval, n


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "null" if x is None else str(x)


def _field(parts: tuple, fields: tuple[str, ...], *, path: tuple, default: str | None = None) -> str:
    if not parts:
        if default is None:
            raise GatePathError(f"{_show(path)}: name a field, one of {', '.join(fields)}")
        return default
    if len(parts) > 1 or parts[0] not in fields:
        raise GatePathError(f"{_show(path)}: {_show(parts)} is not one of {', '.join(fields)}")
    return parts[0]


def _show(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else ("" if i == 0 else ".") + str(p) for i, p in enumerate(path))


# throughput ---------------------------------------------------------------------------------

RATIO_FIELDS = ("ratio", "ci_low", "ci_high", "p_value", "n_pairs")
METRIC_FIELDS = ("median", "mean", "ci_low", "ci_high", "n")


def _ratios(summary: dict, rest: tuple, path: tuple, *, case: str | None) -> list[Found]:
    if len(rest) < 1 or not isinstance(rest[0], str):
        raise GatePathError(f"{_show(path)}: ratio_vs needs a peer label, e.g. ratio_vs[\"mlx-lm\"]")
    peer, field = rest[0], _field(rest[1:], RATIO_FIELDS, path=path)
    return [Found(c.get(field), f"case {c['case']}: ours/{peer} {COMPARED_METRIC} "
                                f"{_fmt(c['ratio'])} [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}], "
                                f"n={c['n_pairs']} pairs")
            for c in summary.get("comparisons", [])
            if c["a"] == OURS and c["b"] == peer and c["metric"] == COMPARED_METRIC
            and (case is None or c["case"] == case)]


def throughput(path: tuple, summary: dict) -> list[Found]:
    head, rest = path[1] if len(path) > 1 else None, path[2:]
    if head == "errors" and not rest:
        ours = [g for g in summary.get("groups", []) if g["server"] == OURS]
        if not ours:
            return []
        failed = sum(g["counts"]["error"] + g["counts"]["incomplete"] for g in ours)
        total = sum(sum(g["counts"].values()) for g in ours)
        return [Found(failed, f"ours: {failed} of {total} requests errored or were incomplete")]
    if head == "ratio_vs":
        return _ratios(summary, rest, path, case=None)
    if head == "case" and rest and isinstance(rest[0], str) and len(rest) >= 2:
        case, what = rest[0], rest[1]
        if what == "ratio_vs":
            return _ratios(summary, rest[2:], path, case=case)
        field = _field(rest[2:], METRIC_FIELDS, path=path, default="median")
        return [Found(g["metrics"][what].get(field),
                      f"case {case}: ours {what} {_fmt(g['metrics'][what]['median'])} "
                      f"[{_fmt(g['metrics'][what]['ci_low'])}, {_fmt(g['metrics'][what]['ci_high'])}], "
                      f"n={g['metrics'][what]['n']}")
                for g in summary.get("groups", [])
                if g["server"] == OURS and g["case"] == case and what in g.get("metrics", {})]
    raise GatePathError(f"{_show(path)}: throughput knows ratio_vs[PEER].FIELD, case[NAME]..., errors")


# divergence ---------------------------------------------------------------------------------

EXACT_FIELDS = ("rate", "ci_low", "ci_high", "prompts", "n")
AGREEMENT_FIELDS = ("mean", "ci_low", "ci_high")


def _cell_where(c: dict) -> str:
    ex = c["exact"]
    which = "serial vs serial" if c["condition"] == "control" else f"batch of {c['batch_size']}"
    return (f"case {c['case']}, {which}: {ex['prompts']}/{ex['n']} prompts exact "
            f"[{_fmt(ex['ci_low'])}, {_fmt(ex['ci_high'])}], max |dlogprob| {_fmt(c['max_abs_logprob_delta'])}")


def divergence(path: tuple, summary: dict) -> list[Found]:
    cells = [c for c in (summary.get("divergence") or {}).get("cells", []) if c["server"] == OURS]
    rest = path[1:]
    if rest[:1] == ("errors",) and len(rest) == 1:
        if not cells:
            return []
        errors = sum(c["errors"] + c["reference_errors"] for c in cells)
        return [Found(errors, f"{errors} generations not compared, over {len(cells)} cells")]
    if rest[:1] == ("control",):
        chosen, rest = [c for c in cells if c["condition"] == "control"], rest[1:]
    elif rest[:1] == ("batch",) and len(rest) > 1 and isinstance(rest[1], int):
        chosen, rest = [c for c in cells if c["condition"] == "batch" and c["batch_size"] == rest[1]], rest[2:]
    else:
        chosen = [c for c in cells if c["condition"] == "batch"]
    if rest[:1] == ("exact_match",):
        field = _field(rest[1:], EXACT_FIELDS, path=path)
        return [Found(c["exact"][field], _cell_where(c)) for c in chosen]
    if rest[:1] == ("agreement",):
        field = _field(rest[1:], AGREEMENT_FIELDS, path=path)
        return [Found(c["agreement"][field], _cell_where(c)) for c in chosen]
    if rest in (("max_abs_logprob_delta",), ("verdict",)):
        return [Found(c[rest[0]], _cell_where(c)) for c in chosen]
    raise GatePathError(f"{_show(path)}: divergence knows [control.|batch[N].]exact_match.FIELD, agreement.FIELD, "
                        "max_abs_logprob_delta, verdict, and errors")


# tools --------------------------------------------------------------------------------------

TOOLS_NODES = {  # node: (summary list, selector key, fields, default field, default selector)
    "parse_fidelity": ("parse_fidelity", "mode", ("fidelity", "ci_low", "ci_high", "n", "clean", "cut_off"),
                       "fidelity", "*"),
    "schema_validity": ("schema_validity", "mode", ("rate", "ci_low", "ci_high", "n", "valid"), "rate", None),
    "accuracy": ("overall", "mode", ("accuracy", "ci_low", "ci_high", "n", "correct"), "accuracy", None),
}
SCENARIO_FIELDS = ("rate", "ci_low", "ci_high", "n", "passed", "errors")


def _entry_where(node: str, e: dict, key: str, value_field: str) -> str:
    return (f"{node} {key} {e.get(key)}: {_fmt(e.get(value_field))} [{_fmt(e.get('ci_low'))}, "
            f"{_fmt(e.get('ci_high'))}], n={e.get('n')}")


def tools(path: tuple, summary: dict) -> list[Found]:
    block = summary.get("tools")
    node, rest = (path[1] if len(path) > 1 else None), path[2:]
    if node == "errors" and not rest:
        if not block:
            return []
        scenarios = (block.get("scenarios") or {}).get("overall") or {}
        errors = sum(c["errors"] for c in block["overall"]) + scenarios.get("errors", 0)
        return [Found(errors, f"{errors} requests errored (every mode{', scenarios' if scenarios else ''})")]
    if node == "scenarios":
        selector = rest[0] if rest and rest[0] not in SCENARIO_FIELDS else None
        field = _field(rest[1:] if selector else rest, SCENARIO_FIELDS, path=path, default="rate")
        scen = (block or {}).get("scenarios")
        if not scen:
            return []
        chosen = [scen["overall"]] if selector is None else [d for d in scen["dialects"] if d["dialect"] == selector]
        return [Found(d.get(field), _entry_where("scenarios", d, "dialect", "rate")
                      + (f"; failed: {', '.join(f['id'] for f in scen['failed'])}" if scen["failed"] else ""))
                for d in chosen]
    if node in TOOLS_NODES:
        listed, key, fields, default_field, default_selector = TOOLS_NODES[node]
        selector = rest[0] if rest and rest[0] not in fields else default_selector
        field = _field(rest[1:] if rest and rest[0] not in fields else rest, fields, path=path,
                       default=default_field)
        entries = [e for e in (block or {}).get(listed) or []
                   if (selector is None and e.get(key) != "*" and e.get("applicable", True))
                   or (selector is not None and e.get(key) == selector)]
        # A mode with nothing to judge (no answer held a call) has no number, not a zero.
        return [Found(e.get(field), _entry_where(node, e, key, default_field)) for e in entries
                if e.get(default_field) is not None]
    raise GatePathError(f"{_show(path)}: tools knows parse_fidelity, schema_validity, accuracy, scenarios "
                        "([SELECTOR].FIELD) and errors")


# contracts ----------------------------------------------------------------------------------

STATUSES = ("pass", "conditional", "fail", "blocked")


def contracts(path: tuple, summary: dict) -> list[Found]:
    block = summary.get("contracts") or {}
    rest = path[1:]
    if rest[:1] == ("totals",):
        field = _field(rest[1:], STATUSES, path=path)
        return [Found(block["totals"][field], f"{block['totals'][field]} cells {field}")] if block else []
    if len(rest) in (1, 2) and all(isinstance(p, str) for p in rest):
        cells = [c for c in block.get("cells", []) if c["client"] == rest[0]
                 and (len(rest) == 1 or c["capability"] == rest[1])]
        return [Found(c["status"], f"{c['client']} / {c['capability']}: {c['status']}"
                                   + (f" ({c['reason'][:160]})" if c["status"] != "pass" else ""))
                for c in cells]
    raise GatePathError(f"{_show(path)}: contracts knows CLIENT.CAPABILITY, CLIENT and totals.STATUS")


RESOLVERS: dict[str, Callable[[tuple, dict], list[Found]]] = {
    "throughput": throughput, "divergence": divergence, "tools": tools, "contracts": contracts}

# A summary with every block present and empty: resolving against it checks a path's shape only.
_EMPTY = {"groups": [], "comparisons": [], "divergence": {"cells": []},
          "tools": {"overall": [], "parse_fidelity": [], "schema_validity": [],
                    "scenarios": {"overall": {}, "dialects": [], "failed": []}},
          "contracts": {"cells": [], "totals": dict.fromkeys(STATUSES, 0)}}


def resolve(path: tuple, summary: dict) -> list[Found]:
    suite = path[0]
    if suite not in RESOLVERS:
        raise GatePathError(f"{_show(path)}: unknown suite {suite!r}; gates read {', '.join(SUITES)}")
    return RESOLVERS[suite](path, summary)


def check_shape(path: tuple) -> None:
    """Raise GatePathError unless the path is one its suite knows."""
    resolve(path, _EMPTY)
