"""Outcome of a run → manifest + summary → validated evidence on disk → console table."""

from __future__ import annotations

from dataclasses import dataclass

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .bench import Outcome, Plan, suite_of
from .evidence import HARNESS_VERSION, new_run_id, run_dir, write_run
from .report_format import fmt_ratio
from .servers import REPO_ROOT


@dataclass(frozen=True)
class Described:
    """A manifest workload entry for suites whose cases are plain dicts (build_manifest asks
    each case to describe itself)."""

    entry: dict

    def describe(self) -> dict:
        return self.entry


def bundle_of(args) -> dict | None:
    """The manifest's "bundle" when `validate` ran this command (its hidden --bundle option)."""
    bundle = getattr(args, "bundle", None)
    return {"id": bundle, "command": "validate", "profile": args.profile} if bundle else None


def split_list(text: str | None) -> list[str]:
    """A comma-separated command-line value, blanks dropped."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def portable(obj, *, replacements: dict[str, str]):
    """Replace machine-specific path prefixes (home, checkout, venv) in every string."""
    if isinstance(obj, dict):
        return {k: portable(v, replacements=replacements) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v, replacements=replacements) for v in obj]
    if isinstance(obj, str):
        for prefix, name in replacements.items():
            obj = obj.replace(prefix, name)
    return obj


def path_replacements(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Machine-specific path prefixes and their portable names, plus `extra` ones."""
    pairs = {str(Path(sys.prefix)): "<venv>", str(REPO_ROOT): ".", str(Path.home()): "~", **(extra or {})}
    # Longest first, so the checkout inside home becomes "." rather than "~/...".
    return dict(sorted(pairs.items(), key=lambda kv: -len(kv[0])))


def run_replacements(outcome: Outcome, evidence_root: Path) -> dict[str, str]:
    """path_replacements, plus a local model folder and the evidence folder a run was given,
    which are as machine-specific as the checkout (a catalog model is named by its id)."""
    pairs = {str(Path(evidence_root).resolve()): "<evidence>"}
    if outcome.model.source == "local folder":
        pairs[str(Path(outcome.model.path).resolve())] = f"<model-folder:{outcome.model.model_id}>"
        pairs[str(outcome.model.path)] = f"<model-folder:{outcome.model.model_id}>"
    return path_replacements(pairs)


def build_manifest(plan: Plan, outcome: Outcome, *, run_id: str, interleaving: str) -> dict:
    env = outcome.environment
    health = outcome.health
    backend = health.get("backend", {})
    return {
        "schema_version": 1,
        "run_id": run_id,
        "suite": plan.suite,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "harness_version": HARNESS_VERSION,
        "git": env["git"],
        "profile": {"name": plan.profile, "flags": health.get("config", {})},
        "model": {"id": outcome.model.model_id, "weights_sha256": outcome.model.weights_sha256,
                  "source": outcome.model.source},
        "backend": {"backend": backend.get("backend", "unknown"), "device": backend.get("device", "unknown"),
                    "blas": backend.get("blas", "unknown"), "dtype": backend.get("dtype", outcome.model.dtype),
                    "mlx_version": backend.get("mlx_version", "unknown")},
        "versions": env["versions"],
        "host": env["host"],
        "engine_mode": health.get("engine", {}).get("mode", "unknown"),
        "servers": outcome.servers,
        "workload": {"cases": [c.describe() for c in plan.cases], "repeats": plan.repeats,
                     "warmup_requests": plan.warmup_requests, "interleaving": interleaving,
                     **({"design": outcome.design.describe()} if outcome.design is not None else {})},
        "argv": list(sys.argv),
        **({"roofline": outcome.roofline} if outcome.roofline is not None else {}),
        **({"bundle": plan.bundle} if plan.bundle else {}),
    }


def publish(plan: Plan, outcome: Outcome, *, evidence_root: Path, comparisons, validation=None,
            interleaving: str | None = None) -> tuple[Path, dict]:
    """A run of a generic command: the suite's summary of the records, the server-order design."""
    if interleaving is None:
        interleaving = outcome.design.interleaving() if outcome.design is not None else "not recorded"
    body = suite_of(plan).summarize(outcome.records, comparisons=comparisons, cases=plan.cases)
    return _write(plan, outcome, evidence_root=evidence_root, interleaving=interleaving, records=outcome.records,
                  body={**body, "validation": validation})


def publish_block(plan: Plan, outcome: Outcome, *, evidence_root: Path, block_name: str, block: dict,
                  interleaving: str, records: list[dict] | None = None) -> tuple[Path, dict]:
    """Write a run whose summary is one suite block (tools, contracts) instead of throughput
    groups; `records` overrides outcome.records (e.g. made portable)."""
    return _write(plan, outcome, evidence_root=evidence_root, interleaving=interleaving,
                  records=outcome.records if records is None else records,
                  body={"groups": [], "comparisons": [], "validation": None, block_name: block})


def _write(plan: Plan, outcome: Outcome, *, evidence_root: Path, interleaving: str, records: list[dict],
           body: dict) -> tuple[Path, dict]:
    """The one way a run reaches evidence/: a fresh run id, the manifest, the summary body."""
    run_id = new_run_id(plan.suite)
    summary = {"schema_version": 1, "run_id": run_id, **body}
    manifest = portable(build_manifest(plan, outcome, run_id=run_id, interleaving=interleaving),
                        replacements=run_replacements(outcome, evidence_root))
    directory = run_dir(evidence_root, model_id=outcome.model.model_id, profile=plan.profile, run_id=run_id)
    write_run(directory, manifest=manifest, records=records, summary=summary)
    return directory, summary


def _fmt(metric: dict | None, digits: int = 1) -> str:
    if not metric:
        return "n/a"
    if metric.get("ci_low") is None:
        return f"{metric['median']:.{digits}f} (n={metric['n']})"
    return f"{metric['median']:.{digits}f} [{metric['ci_low']:.{digits}f}, {metric['ci_high']:.{digits}f}]"


METRIC_LABELS = {"output_tok_per_s": "output tok/s", "ttft_p50_s": "TTFT p50"}
CACHE_NOTE = ("cache: warm = both servers' prompt caches on, cold = both off, warm-vs-cold = a on and b off. "
              "setup: engine-vs-engine = the peer computed with our BLAS; as-shipped = the peer as its README "
              "sets it up (mlx_lm.server on Linux: MLX's reference BLAS). "
              "ratio = a/b; 'faster' means a is better (more tok/s, or a shorter TTFT: a TTFT ratio below 1).")


def _cached(group: dict) -> str:
    pc = group.get("prompt_cache")
    if not pc or pc.get("fraction") is None:
        return "n/a"
    return f"{pc['fraction']:.0%}"


def verdict_text(comparison: dict) -> str:
    """The verdict, with the failed repeats that decided it when there were any."""
    failed = comparison.get("failed_repeats")
    if not failed:
        return comparison["verdict"]
    return f"{comparison['verdict']} (failed repeats: a {failed['a']}, b {failed['b']})"


def print_summary(summary: dict, servers: list[dict], *, console: Console) -> None:
    table = Table(title="median [95% t interval] across repeats")
    for col in ("case", "server", "cache", "n", "out tok/s", "req/s", "TTFT p50 ms", "ITL p50 ms", "cached prompt",
                "ok/err/inc"):
        table.add_column(col)
    cache_of = {s["label"]: s.get("prefix_cache", "unknown") for s in servers}
    for g in summary["groups"]:
        m, c = g["metrics"], g["counts"]
        ms = lambda k: {**m[k], **{f: (m[k][f] * 1000 if m[k][f] is not None else None)  # noqa: E731
                                   for f in ("median", "ci_low", "ci_high")}} if m.get(k) else None
        table.add_row(g["case"], g["server"], cache_of.get(g["server"], "unknown"), str(g["n_repeats"]),
                      _fmt(m.get("output_tok_per_s")), _fmt(m.get("requests_per_s"), 2), _fmt(ms("ttft_p50_s"), 0),
                      _fmt(ms("itl_p50_s"), 0), _cached(g), f"{c['ok']}/{c['error']}/{c['incomplete']}")
    console.print(table)
    if comps := summary.get("comparisons", []):
        ctable = Table(title="paired ratios a/b over repeats [95% interval]", caption=CACHE_NOTE)
        for col in ("case", "cache", "setup", "a / b", "metric", "ratio [95% CI]", "pairs", "p", "verdict"):
            ctable.add_column(col)
        for comp in comps:
            p_value = "n/a" if comp["p_value"] is None else f"{comp['p_value']:.4f}"
            ratio = fmt_ratio(comp)
            ctable.add_row(comp["case"], comp.get("cache", "n/a"), comp.get("setup", ""), f"{comp['a']} / {comp['b']}",
                           METRIC_LABELS.get(comp["metric"], comp["metric"]), ratio,
                           str(comp["n_pairs"]), p_value, verdict_text(comp))
        console.print(ctable)
    for s in servers:
        if s["status"] != "ran":
            console.print(f"[yellow]{s['label']} did not run:[/yellow] {(s['reason'] or '').splitlines()[0]}")
