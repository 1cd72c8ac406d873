"""The published matrix: every profile's decision on the models it targets, computed from stored
evidence only, with the numbers that decided it and links to the runs.

`nox -s publish` writes it from the committed (git-tracked) evidence as reports/published.md (for
people), reports/published.json (what `mlx-proof serve` reads to warn about a held profile) and at
the top of reports/index.html. Ages count back from the newest evidence, never from today, so
the same evidence always renders the same files (tests/unit/test_published.py checks the
committed ones).
"""

from __future__ import annotations

import html
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .evidence import HARNESS_VERSION
from .gates import PASS, WARN, Decision, evaluate, newest_time
from .profiles import ProfileSet, catalog_pins, load_profiles
from .report_contracts import matrix_rows

TITLE = "Published profiles"
SHORT = {"promote": "published", WARN: "published, with a warning", "hold": "held"}


@dataclass(frozen=True)
class Matrix:
    decisions: list[Decision]
    models: list[str]
    profiles: ProfileSet
    runs: list  # the evidence it was computed from, newest first
    as_of: str


def tracked_runs(runs: list, evidence_root: Path) -> list:
    """The runs git tracks (committed or staged): `publish` reads committed evidence only. Outside a
    git checkout every run counts."""
    root = Path(evidence_root).resolve()
    done = subprocess.run(["git", "ls-files", "-z", "--", "."], cwd=root, capture_output=True, check=False)
    if done.returncode != 0:
        return runs
    dirs = {(root / name).parent for name in done.stdout.decode().split("\0") if name.endswith("manifest.json")}
    return [r for r in runs if Path(r.path).resolve() in dirs]


def compute(runs: list, *, profiles: ProfileSet | None = None, pins: dict[str, str] | None = None) -> Matrix:
    profiles = profiles or load_profiles()
    pins = catalog_pins() if pins is None else pins
    now = newest_time(runs)
    decisions = [evaluate(p, model, runs, profiles, now=now, pins=pins)
                 for p in profiles.profiles.values() for model in p.models]
    models = list(dict.fromkeys(m for p in profiles.profiles.values() for m in p.models))
    return Matrix(decisions, models, profiles, runs, now.isoformat(timespec="seconds"))


def _relative(run_path: str | None, evidence_root: Path) -> str | None:
    """A run's folder as `evidence/<model>/<profile>/<run-id>`, wherever the checkout is."""
    if not run_path:
        return None
    path, root = Path(run_path).resolve(), Path(evidence_root).resolve()
    try:
        return str(Path(root.name) / path.relative_to(root))
    except ValueError:
        return str(path)


def document(matrix: Matrix, evidence_root: Path) -> dict:
    """published.json: the decisions, machine-readable."""
    return {"schema_version": 1, "as_of": matrix.as_of, "harness_version": HARNESS_VERSION,
            "evidence_runs": len(matrix.runs),
            "cells": [{"profile": d.profile, "model": d.model, "kind": matrix.profiles.get(d.profile).kind,
                       "decision": d.decision, "published": d.published, "reasons": d.reasons,
                       "gates": [{"gate": r.gate.text, "level": r.level, "status": r.status, "value": r.value,
                                  "where": r.where, "run_id": r.run_id,
                                  "run": _relative(r.run_path, evidence_root), "reason": r.reason}
                                 for r in d.results]}
                      for d in matrix.decisions]}


def _cell(matrix: Matrix, profile: str, model: str) -> Decision | None:
    return next((d for d in matrix.decisions if d.profile == profile and d.model == model), None)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _link(run_id: str | None, run: str | None) -> str:
    return f"[{run_id}](../{run}/)" if run_id and run else "—"


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _latest(runs: list, suite: str, model: str | None = None, *, having=lambda r: True):
    return next((r for r in runs if r.manifest["suite"] == suite and having(r)
                 and (model is None or r.manifest["model"]["id"] == model)), None)


def _peer_comparisons(run) -> list[dict]:
    return [c for c in run.summary.get("comparisons", [])
            if c["a"].startswith("ours") and not c["b"].startswith("ours")]


def markdown(matrix: Matrix, evidence_root: Path) -> str:
    doc = document(matrix, evidence_root)
    names = list(matrix.profiles.profiles)
    out = [f"# {TITLE}", "",
           f"Computed by `nox -s publish` from the {len(matrix.runs)} committed evidence runs under `evidence/` "
           f"(the newest ended {matrix.as_of}; evidence ages count back from then). Do not edit: "
           "`tests/unit/test_published.py` fails when this file differs from a regeneration. A profile is "
           "published for a model when every required gate passes on eligible evidence (same weights "
           "sha256 as the catalog, same harness major version, recent enough, served with the profile's "
           "flags); a failing or unevidenced warning gate publishes it with a warning; anything else holds it.",
           "", "## Model × profile", "", _md_row(["model", *names]), "|" + "---|" * (len(names) + 1)]
    for model in matrix.models:
        row = [f"`{model}`"]
        for name in names:
            d = _cell(matrix, name, model)
            row.append("·" if d is None else f"[{SHORT[d.decision]}](#{name}--{model.replace('.', '')})")
        out.append(_md_row(row))
    out += ["", "`·`: the profile does not target this model (`models` in `serving/profiles.toml`).", ""]
    for cell in doc["cells"]:
        out += [f"### {cell['profile']} × {cell['model']}: {cell['decision']}",
                f'<a name="{cell["profile"]}--{cell["model"].replace(".", "")}"></a>', "",
                _md_row(["gate", "level", "result", "value", "where", "run"]), "|---|---|---|---|---|---|"]
        previous = None
        for g in cell["gates"]:
            where = g["where"] if g["status"] != "missing" else g["reason"]
            where, previous = ("the same" if where == previous and g["status"] == "missing" else where), where
            out.append(_md_row([f"`{g['gate']}`", g["level"], g["status"] if g["status"] == PASS else
                                f"**{g['status']}**", _shown(g["value"]), where, _link(g["run_id"], g["run"])]))
        if not cell["gates"]:
            out.append(_md_row(["(no gates)", "", "**hold**", "", "nothing proves this profile", ""]))
        out.append("")
    out += _clients_md(matrix, evidence_root) + _throughput_md(matrix, evidence_root)
    out += _calibration_md(matrix, evidence_root)
    return "\n".join(out).rstrip() + "\n"


def _clients_md(matrix: Matrix, evidence_root: Path) -> list[str]:
    run = _latest(matrix.runs, "contracts")
    out = ["## Client × capability", ""]
    if run is None:
        return out + ["No contracts run in the evidence.", ""]
    head, rows = matrix_rows(run.summary["contracts"])
    out += [f"The newest contracts run, {_link(run.manifest['run_id'], _relative(str(run.path), evidence_root))} "
            f"(profile {run.manifest['profile']['name']}, harness {run.manifest['harness_version']}); every "
            "non-pass cell's reason is in the run's report.", "", _md_row(head), "|" + "---|" * len(head)]
    return out + [_md_row(r) for r in rows] + [""]


def _throughput_md(matrix: Matrix, evidence_root: Path) -> list[str]:
    out = ["## Throughput against peers", ""]
    for model in matrix.models:
        with_peers = [r for r in matrix.runs if r.manifest["suite"] == "throughput"
                      and r.manifest["model"]["id"] == model and _peer_comparisons(r)]
        # One table per backend: a GPU run says nothing about the CPU's ratios, nor the reverse.
        for backend in dict.fromkeys(r.manifest["backend"]["backend"] for r in with_peers):
            out += [f"`{model}` on {backend}: each case's newest ratio against each peer, and the run it comes "
                    "from (ratio a/b over paired repeats, 95% t interval). Flags our server ran with beyond "
                    "its profile are named: such a ratio is not the profile's default behaviour.", "",
                    _md_row(["case", "a / b", "metric", "ratio [95% CI]", "pairs", "verdict", "cache", "run",
                             "machine, dtype", "our flags beyond the profile"]),
                    "|---|---|---|---|---|---|---|---|---|---|"]
            seen = set()
            for run in (r for r in with_peers if r.manifest["backend"]["backend"] == backend):  # newest first
                host, extra = run.manifest["host"], _flags_beyond_profile(run.manifest)
                for c in _peer_comparisons(run):
                    # The peer's name already says its cache and setup (mlx-lm-nocache, …-as-shipped).
                    key = (c["case"], c["a"], c["b"], c["metric"])
                    if key in seen:
                        continue
                    seen.add(key)
                    ratio = "—" if c["ratio"] is None else f"{c['ratio']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
                    out.append(_md_row([
                        c["case"], f"{c['a']} / {c['b']}", c["metric"], ratio, str(c["n_pairs"]), c["verdict"],
                        c.get("cache", "—"), _link(run.manifest["run_id"], _relative(str(run.path), evidence_root)),
                        f"{host.get('gpu') or host['cpu']}, {run.manifest['backend']['dtype']}",
                        f"`{extra}`" if extra else "—"]))
            out.append("")
    return out if len(out) > 2 else out + ["No throughput run against a peer in the evidence.", ""]


# What every launch of our server passes; anything else is a choice the reader must be told of.
_LAUNCH_FLAGS = ("--model", "--port", "--profile")


def _flags_beyond_profile(manifest: dict) -> str:
    """The flags our server ran with beyond the profile's own (e.g. --decode-step compiled): a ratio
    measured with them is not the profile's default behaviour."""
    ours = next((s for s in manifest.get("servers", []) if s.get("label") == "ours"), None)
    argv = list((ours or {}).get("argv") or [])
    if "serve" not in argv:
        return ""
    rest, skip = [], False
    for arg in argv[argv.index("serve") + 1:]:
        if skip:
            skip = False
        elif arg in _LAUNCH_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in _LAUNCH_FLAGS)):
            rest.append(arg)
    return " ".join(rest)


def _calibration_md(matrix: Matrix, evidence_root: Path) -> list[str]:
    """Every calibration run, newest first: the rule's power depends on the machine and the case,
    so one machine's verdict does not stand for another's."""
    runs = [r for r in matrix.runs if r.manifest["suite"] in ("calibrate", "validate") and r.summary.get("validation")]
    out = ["## The comparison rule's calibration", ""]
    if not runs:
        return out + ["No calibration run in the evidence.", ""]
    out += ["| run | machine | case | A/A flagged (Wilson 95% upper) | plant cost | caught (Wilson 95% lower) "
            "| pairs per decision | verdict |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        v, host = run.summary["validation"], run.manifest["host"]
        verdict = (v.get("verdict") or {}).get("status", "not recorded (harness < 0.7.0)")
        if v.get("pooled_from"):
            verdict += f" (pools {len(v['pooled_from'])} runs)"
        real = v.get("planted_ratio") or {}
        cost = "not recorded" if real.get("ratio") is None else f"{1 - real['ratio']:.1%}"
        machine = host.get("gpu") or f"{host.get('cores')}-core CPU"
        cases = ", ".join(c.get("name", "?") for c in run.manifest["workload"]["cases"])
        out.append(f"| {_link(run.manifest['run_id'], _relative(str(run.path), evidence_root))} | {machine} | {cases} "
                   f"| {v['aa_flagged']}/{v['aa_trials']} ({v['fpr_ci'][1]:.3f}) | {cost} "
                   f"| {v['planted_flagged']}/{v['planted_trials']} ({v['power_ci'][0]:.3f}) "
                   f"| {v.get('pairs_per_trial', 'unrecorded')} | {verdict} |")
    return out + ["", "Proven needs the A/A upper bound <= 0.05 and the caught lower bound >= 0.95 (73 clean trials "
                  "of each at least) against a plant costing 4-7%.", ""]


def html_section(matrix: Matrix, evidence_root: Path) -> str:
    """The matrix at the top of reports/index.html (each run link jumps to its section below)."""
    e = html.escape
    names = list(matrix.profiles.profiles)
    rows = []
    for model in matrix.models:
        cells = []
        for name in names:
            d = _cell(matrix, name, model)
            if d is None:
                cells.append("<td>·</td>")
                continue
            why = "&#10;".join(e(r) for r in d.reasons) or "every gate passed"
            runs = " ".join(f'<a href="#{e(r)}">{e(r[:16])}</a>' for r in d.runs())
            cells.append(f'<td class="{e(d.decision)}" title="{why}"><b>{e(SHORT[d.decision])}</b><br>{runs}</td>')
        rows.append(f"<tr><th>{e(model)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    return (f'<section id="published"><h2>{TITLE}</h2><p class="note">From {len(matrix.runs)} runs, the newest '
            f"ended {e(matrix.as_of)}. Hover a cell for the gates that failed or lack evidence; "
            f"reports/published.md has every gate with its number.</p><table><tr><th>model</th>{head}</tr>"
            + "".join(rows) + "</table></section>")


def write(matrix: Matrix, *, evidence_root: Path, reports_dir: Path) -> tuple[Path, Path]:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    md, js = reports_dir / "published.md", reports_dir / "published.json"
    md.write_text(markdown(matrix, evidence_root), encoding="utf-8")
    js.write_text(json.dumps(document(matrix, evidence_root), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return md, js
