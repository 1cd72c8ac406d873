"""Pool the trials of several calibrate runs into one decision.

Proving the comparison rule takes at least 73 trials of each kind: about five hours on a 2-core
CPU, and more than one sitting (or one 10-minute slot on a borrowed GPU) allows. Trials are
independent decisions, each on its own interleaved pairs, so runs of the same tree on the same
machine with the same settings can be pooled: their trials are renumbered end to end and decided
again, exactly as one long run would have decided them. Runs that differ in anything that moves
the measurement (commit, dirty tree, host, model, backend, case, pairs per trial, plant,
threshold, serve flags) are refused with the difference named.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import calibrate as bounds
from .evidence import Run, new_run_id, read_run, run_dir, write_run
from .metrics import decided_metric, decision_label, summarize
from .publish import path_replacements, portable

# What must be equal for two runs' trials to be one experiment (manifest paths, then validation keys).
# Serve flags are compared server by server: profile.flags is the first of ours started, which
# under launch blocks may be any of them (the planted one too).
SAME_MANIFEST = (("git",), ("host",), ("model",), ("backend",), ("versions",), ("servers",),
                 ("workload", "cases"), ("engine_mode",))
SAME_SETTINGS = ("pairs_per_trial", "planted_slowdown", "threshold", "alpha", "metric")
# Chosen afresh at every launch, so they say nothing about the experiment.
PER_LAUNCH_FLAGS = ("port",)


class PoolError(ValueError):
    pass


def _at(doc: dict, path: tuple[str, ...]):
    for key in path:
        doc = (doc or {}).get(key)
    if path == ("servers",) and isinstance(doc, list):
        doc = {s["label"]: {k: v for k, v in ((s.get("health") or {}).get("config") or {}).items()
                            if k not in PER_LAUNCH_FLAGS} for s in doc}
    return doc


def check_poolable(runs: list[Run]) -> None:
    """Raise PoolError naming the first run and field that keep these runs from being one experiment."""
    if len(runs) < 2:
        raise PoolError("pooling needs at least two calibrate runs")
    first = runs[0]
    for run in runs:
        rid = run.manifest["run_id"]
        v = run.summary.get("validation")
        if run.manifest["suite"] != "calibrate" or not v or "verdict" not in v:
            raise PoolError(f"{rid} is not a calibrate run (harness 0.7.0+)")
        if v["verdict"]["quick"]:
            raise PoolError(f"{rid} is a --quick run: it checks the machinery, its trials are not evidence")
        if v.get("pooled_from"):
            raise PoolError(f"{rid} is itself pooled: pool its parts instead")
        if run.manifest["git"].get("dirty"):
            raise PoolError(f"{rid} ran on a dirty tree: which code its trials measured is unknown")
        for path in SAME_MANIFEST:
            if _at(run.manifest, path) != _at(first.manifest, path):
                raise PoolError(f"{rid} differs from {first.manifest['run_id']} in manifest "
                                f"{'.'.join(path)}: {_at(run.manifest, path)!r} != {_at(first.manifest, path)!r}")
        for key in SAME_SETTINGS:
            if v.get(key) != first.summary["validation"].get(key):
                raise PoolError(f"{rid} differs from {first.manifest['run_id']} in {key}: "
                                f"{v.get(key)!r} != {first.summary['validation'].get(key)!r}")
    ids = [r.manifest["run_id"] for r in runs]
    if len(set(ids)) != len(ids):
        raise PoolError("the same run is named twice")


def renumbered(runs: list[Run]) -> list[dict]:
    """Every run's records, repeats shifted past the runs before it so no two trials share a number."""
    records, offset = [], 0
    for run in runs:
        for rec in run.records:
            records.append({**rec, "repeat": rec["repeat"] + offset} if "repeat" in rec else dict(rec))
        offset += run.manifest["workload"]["repeats"]
    return records


def pool(directories: list[Path], *, evidence_root: Path, console, per_repeat=None) -> tuple[int, Path]:
    """Decide on the pooled trials and write them as one calibrate run; returns (exit code, run folder)."""
    from .commands import reported, validation_block  # commands imports the suites; keep this module light

    runs = sorted((read_run(Path(d)) for d in directories), key=lambda r: r.manifest["started_at"])
    check_poolable(runs)
    first_v = runs[0].summary["validation"]
    records = renumbered(runs)
    kwargs = {"per_repeat": per_repeat} if per_repeat is not None else {}
    metric = decided_metric(first_v)
    block = validation_block(records, pairs_per_trial=first_v["pairs_per_trial"], slowdown=first_v["planted_slowdown"],
                             threshold=first_v["threshold"], metric=metric, **kwargs)
    expected = sum(r.summary["validation"]["aa_trials"] for r in runs)
    if block["aa_trials"] != expected:
        raise PoolError(f"pooled {block['aa_trials']} trials, but the runs report {expected}: their repeats overlap")
    block["verdict"] = bounds.verdict(block, quick=False)
    block["pooled_from"] = [r.manifest["run_id"] for r in runs]

    run_id = new_run_id("calibrate")
    manifest = dict(runs[0].manifest, run_id=run_id, started_at=runs[0].manifest["started_at"],
                    finished_at=max(r.manifest["finished_at"] for r in runs),
                    argv=portable(list(sys.argv), replacements=path_replacements()))
    manifest["workload"] = dict(manifest["workload"], repeats=sum(r.manifest["workload"]["repeats"] for r in runs))
    manifest["workload"].pop("design", None)  # each part drew its own server orders; they stay in the parts
    # The same groups and comparisons a single calibrate run stores, recomputed over every pair.
    body = summarize(records, comparisons=[reported(s, "A", metric) for s in ("A2", "planted")])
    summary = {"schema_version": 1, "run_id": run_id, **body, "validation": block}
    directory = run_dir(evidence_root, model_id=manifest["model"]["id"], profile=manifest["profile"]["name"],
                        run_id=run_id)
    write_run(directory, manifest=manifest, records=records, summary=summary)
    console.print(f"pooled {len(runs)} runs ({', '.join(block['pooled_from'])}): A/A {block['aa_flagged']}/"
                  f"{block['aa_trials']} flagged (Wilson 95% upper {block['fpr_ci'][1]:.3f}); planted "
                  f"{block['planted_flagged']}/{block['planted_trials']} caught (Wilson 95% lower "
                  f"{block['power_ci'][0]:.3f}); the plant cost {bounds.plant_cost(block)}; "
                  f"decided on {decision_label(metric)}")
    decided = block["verdict"]
    console.print(f"{decided['status']}" + "".join(f"\n  - {r}" for r in decided["reasons"]))
    console.print(f"evidence: {directory}")
    return bounds.EXIT_CODES[decided["status"]], directory
