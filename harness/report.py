"""Render stored evidence runs as a self-contained HTML report and a Markdown summary.

Reads only stored evidence; measures nothing. A run is any object with .path, .manifest,
.records and .summary (harness.evidence.Run fits); a run directory is read by a fallback loader.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import report_contracts, report_divergence, report_profile, report_roofline, report_tools
from .machine_load import describe as describe_load, trial_loads
from .metrics import decision_label
from .report_format import fmt_ci, fmt_num, fmt_p, text_or_na

DEFAULT_TITLE = "mlx-proof evidence report"
TABLE_METRICS = (
    ("requests_per_s", "requests/s"), ("output_tok_per_s", "output tok/s"),
    ("total_tok_per_s", "total tok/s"), ("ttft_p50_s", "TTFT p50 (s)"), ("ttft_p95_s", "TTFT p95 (s)"),
    ("itl_p50_s", "ITL p50 (s)"), ("itl_p95_s", "ITL p95 (s)"), ("e2e_p50_s", "E2E p50 (s)"),
    ("peak_rss_mb", "peak RSS (MB)"),
)
# Recomputes median output tok/s per (server, case) from raw.jsonl, run inside the run directory.
# The same computation as harness.metrics' docstring: dtype=False keeps case
# names as strings, fill_value=0 counts a repeat with no ok request as 0 tok/s.
RECOMPUTE_ONE_LINER = (
    "python -c \"import pandas as pd; r=pd.read_json('raw.jsonl',lines=True,dtype=False); "
    "q=r[(r.type=='request')&(r.status=='ok')].groupby(['server','case','repeat']).completion_tokens.sum(); "
    "w=r[r.type=='run'].set_index(['server','case','repeat']).wall_s; "
    "print(q.div(w,fill_value=0).groupby(level=[0,1]).median())\""
)


def _as_run(obj: Any) -> Any:
    """A run object as is; a run directory through a fallback loader (harness.evidence is the real one)."""
    if all(hasattr(obj, a) for a in ("path", "manifest", "records", "summary")):
        return obj
    if not isinstance(obj, (str, Path)):
        raise TypeError(f"not a run: {obj!r} (needs .path, .manifest, .records, .summary)")
    d, raw = Path(obj), Path(obj) / "raw.jsonl"
    text = raw.read_text("utf-8") if raw.exists() else gzip.decompress((d / "raw.jsonl.gz").read_bytes()).decode()
    return SimpleNamespace(path=d, manifest=json.loads((d / "manifest.json").read_text("utf-8")),
                           records=[json.loads(line) for line in text.splitlines() if line.strip()],
                           summary=json.loads((d / "summary.json").read_text("utf-8")))


def _workloads(records: list[dict]) -> tuple[dict, dict]:
    """Per (server, case): the single concurrency of its requests, and a load label."""
    conc, rate = defaultdict(set), defaultdict(set)
    for r in records:
        if r.get("type") == "request":
            key = (r.get("server"), r.get("case"))
            if r.get("concurrency") is not None:
                conc[key].add(r["concurrency"])
            if r.get("rate_rps") is not None:
                rate[key].add(r["rate_rps"])
    labels = {k: "concurrency " + ", ".join(str(c) for c in sorted(v)) for k, v in conc.items()}
    for k, v in rate.items():
        rates = "rate " + ", ".join(fmt_num(x) for x in sorted(v)) + " req/s"
        labels[k] = f"{labels[k]}; {rates}" if k in labels else rates
    return {k: next(iter(v)) for k, v in conc.items() if len(v) == 1}, labels


def _meta(man: dict) -> list[tuple[str, str]]:
    model, prof, be = man.get("model") or {}, man.get("profile") or {}, man.get("backend") or {}
    host, ver, git = man.get("host") or {}, man.get("versions") or {}, man.get("git") or {}
    flags = prof.get("flags") or {}
    host_bits = [text_or_na(host.get("cpu")), text_or_na(host.get("os")), f"{text_or_na(host.get('cores'))} cores",
                 f"{fmt_num(host.get('memory_gb'))} GB"] + ([f"GPU {host['gpu']}"] if host.get("gpu") else [])
    return [
        ("suite", text_or_na(man.get("suite"))), ("model", text_or_na(model.get("id"))),
        ("weights sha256", text_or_na(model.get("weights_sha256"))[:12]),
        ("profile", text_or_na(prof.get("name")) + (f" {json.dumps(flags, sort_keys=True)}" if flags else "")),
        ("backend", f"{text_or_na(be.get('backend'))} / {text_or_na(be.get('device'))}, BLAS {text_or_na(be.get('blas'))}, "
                    f"dtype {text_or_na(be.get('dtype'))}"),
        ("versions", f"python {text_or_na(ver.get('python'))}, mlx {text_or_na(ver.get('mlx'))}, mlx_lm {text_or_na(ver.get('mlx_lm'))}"),
        ("engine mode", text_or_na(man.get("engine_mode"))), ("git commit", text_or_na(git.get("commit"))[:12]),
        ("host", ", ".join(host_bits)), ("started at", text_or_na(man.get("started_at"))),
        ("finished at", text_or_na(man.get("finished_at"))), ("harness", text_or_na(man.get("harness_version"))),
    ] + _cache_states(man) + _blas_setups(man)


def _blas_setups(man: dict) -> list[tuple[str, str]]:
    """Each server's BLAS as set up and as mapped (harness 0.7.0+)."""
    parts = [f"{text_or_na(s.get('label'))}: {s['blas'].get('setup')}, loaded {text_or_na(s['blas'].get('loaded'))}"
             for s in man.get("servers") or [] if s.get("blas")]
    return [("BLAS per server", "; ".join(parts))] if parts else []


def _cache_states(man: dict) -> list[tuple[str, str]]:
    states = [f"{text_or_na(s.get('label'))} {s['prefix_cache']}" for s in man.get("servers") or [] if "prefix_cache" in s]
    return [("prompt caches", ", ".join(states))] if states else []


def _unavailable(man: dict) -> list[tuple[str, str]]:
    return [(text_or_na(s.get("label")), text_or_na(s.get("reason")) if s.get("reason") else "no reason recorded")
            for s in man.get("servers") or [] if s.get("status") == "unavailable"]


def _shown_path(run: Any) -> str:
    """evidence/<model>/<profile>/<run-id>: where the run sits in any checkout, not on this machine."""
    return str(Path("evidence", *Path(run.path).parts[-3:])) if run.path is not None else "n/a"


def _one_liner(run: Any) -> str:
    """The recompute one-liner (the tools suite's for tools runs), naming raw.jsonl.gz when only that is stored."""
    p = Path(run.path) if run.path is not None else Path("/nonexistent")
    gz = not (p / "raw.jsonl").exists() and (p / "raw.jsonl.gz").exists()
    summary = run.summary or {}
    line = (report_tools.TOOLS_RECOMPUTE if summary.get("tools") else
            report_contracts.CONTRACTS_RECOMPUTE if summary.get("contracts") else
            report_divergence.DIVERGENCE_RECOMPUTE if summary.get("divergence") else
            report_profile.PROFILE_RECOMPUTE if summary.get("profile") else RECOMPUTE_ONE_LINER)
    return line.replace("'raw.jsonl'", "'raw.jsonl.gz'") if gz else line


def _recomputed(run: Any) -> str:
    summary = run.summary or {}
    return ("accuracy per (category, mode)" if summary.get("tools") else
            "the client x capability matrix" if summary.get("contracts") else
            "the exact-match share and mean agreement over comparisons, per condition and batch size"
            if summary.get("divergence") else
            "the median ms of every part per batch size" if summary.get("profile") else
            "median output tok/s per (server, case)")


def _figures(run: Any, conc: dict) -> tuple[list[tuple[str, bytes]], str | None]:
    try:
        from .report_figures import run_figures
    except ImportError as e:  # matplotlib is optional for the harness
        return [], f"Figures omitted: {e}."
    return run_figures(run.summary or {}, run.records or [], conc), None


_CSS = """body{font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:#1f2328;max-width:1100px;margin:2em auto;padding:0 1em}h1{font-size:1.8em}h2{border-bottom:1px solid #d0d7de;
padding-bottom:.2em;margin-top:2.5em;font-size:1.35em}h3{font-size:1.05em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-variant-numeric:tabular-nums}th,td{border:1px solid #d0d7de;
padding:.25em .6em;text-align:right}th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
caption{text-align:left;font-weight:600;padding:.3em 0}dl.meta{display:grid;grid-template-columns:max-content 1fr;
gap:.1em 1em}dl.meta dt{color:#57606a}dl.meta dd{margin:0}code,pre{font:13px ui-monospace,Menlo,monospace}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}.note{color:#57606a}
.badge{display:inline-block;padding:0 .5em;border-radius:1em;font-size:.8em;font-weight:600;color:#fff}
.dirty{background:#bf8700}.faster{background:#dafbe1;font-weight:600}.slower{background:#ffebe9;font-weight:600}
figure img{max-width:100%}figcaption{color:#57606a;font-size:.9em}.groups{display:flex;flex-wrap:wrap;gap:0 2em}
td.promote{background:#dafbe1}td.promote-with-warning{background:#fff8c5}td.hold{background:#ffebe9}"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _rid(run: Any) -> str:
    return text_or_na((run.manifest or {}).get("run_id") or (run.summary or {}).get("run_id"))


def _metric_cells(m: dict | None) -> list[str]:
    """[median, CI, n] of one stored metric."""
    if not m:
        return ["not recorded", "n/a", "n=0"]
    return [fmt_num(m.get("median")), fmt_ci(m.get("ci_low"), m.get("ci_high"), m.get("n")), f"n={text_or_na(m.get('n'))}"]


def _counts(g: dict) -> str:
    return "/".join(text_or_na((g.get("counts") or {}).get(k)) for k in ("ok", "error", "incomplete"))


COMPARISON_HEAD = ("case", "a", "b", "metric", "ratio", "95% CI", "p-value", "test", "verdict", "n_pairs",
                   "cache", "setup")
COMPARISON_NOTE = ("ratio = a/b of the metric over paired repeats; 'faster' means a is better: a ratio above 1 "
                   "for throughput (…_per_s), below 1 for times (…_s, e.g. ttft_p50_s). From harness 0.6.0 a "
                   "repeat that failed or produced nothing counts against its server: the side with more failed repeats "
                   "loses. cache: warm = both "
                   "servers' prompt/prefix caches on, cold = both off, warm-vs-cold = a on and b off "
                   "(n/a: not recorded, runs before harness 0.3.0). setup: engine-vs-engine = the peer computed "
                   "with the BLAS our server loaded; as-shipped = the peer ran as its own README sets it up "
                   "(mlx_lm.server from PyPI on Linux: MLX's bundled reference BLAS); n/a: before harness 0.7.0.")


def _comparison_cells(c: dict) -> list[str]:
    return [text_or_na(c.get(k)) for k in ("case", "a", "b", "metric")] + [
        fmt_num(c.get("ratio")), fmt_ci(c.get("ci_low"), c.get("ci_high"), c.get("n_pairs")),
        fmt_p(c.get("p_value")), text_or_na(c.get("test")), _verdict(c), f"n={text_or_na(c.get('n_pairs'))}",
        text_or_na(c.get("cache")), text_or_na(c.get("setup"))]


def _verdict(c: dict) -> str:
    """The verdict, and the failed repeats that decided it (harness 0.6.0+: they count against their server)."""
    failed = c.get("failed_repeats")
    if not failed:
        return text_or_na(c.get("verdict"))
    return f"{text_or_na(c.get('verdict'))} (failed repeats: a {failed.get('a')}, b {failed.get('b')})"


def _cached_cell(g: dict) -> str:
    """'cached of prompt tokens (fraction)' as the server reported them; n/a when it did not."""
    pc = g.get("prompt_cache")
    if not pc:
        return "n/a"
    frac = "" if pc.get("fraction") is None else f" ({fmt_num(100 * pc['fraction'], trim=True)}%)"
    return f"{pc.get('cached_tokens')} of {pc.get('prompt_tokens')}{frac}, n={pc.get('requests')} requests"


def _validation_lines(v: dict) -> list[str]:
    (lo, hi), (plo, phi) = ((list(v.get(k) or []) + [None, None])[:2] for k in ("fpr_ci", "power_ci"))
    lines = [
        f"A/A false-positive rate: {fmt_num(v.get('false_positive_rate'), trim=True)} ({text_or_na(v.get('aa_flagged'))} "
        f"of {text_or_na(v.get('aa_trials'))} trials flagged), 95% Wilson CI {fmt_ci(lo, hi, v.get('aa_trials'))}",
        f"Power against a planted slowdown of {fmt_num(v.get('planted_slowdown'), trim=True)}: "
        f"{fmt_num(v.get('power'), trim=True)} ({text_or_na(v.get('planted_flagged'))} of {text_or_na(v.get('planted_trials'))} "
        f"trials flagged), 95% CI {fmt_ci(plo, phi, v.get('planted_trials'))}",
        f"alpha {fmt_num(v.get('alpha'), trim=True)}, decision threshold {fmt_num(v.get('threshold'), trim=True)}",
    ]
    if "pairs_per_trial" in v:  # runs before harness 0.2.0 lack these
        real = v["planted_ratio"]
        lines += [
            f"{v['pairs_per_trial']} interleaved pairs per trial; at threshold 0 (the bare test) A/A flags "
            f"{v['aa_significant']} and the planted slowdown {v['planted_significant']} of {v['aa_trials']} trials",
            f"The plant really cost: planted/A = {fmt_num(real['ratio'])} "
            f"{fmt_ci(real['ci_low'], real['ci_high'], real['n_pairs'])} over n={real['n_pairs']} pairs",
        ]
    if "metric" in v:  # harness 0.10.0+: the rule decides on a time, read as a rate
        lines.append(f"Decided on {decision_label(v['metric'])} per repeat: every ratio above is a ratio of speeds")
    if loads := trial_loads(v):  # harness 0.9.0+
        lines.append(f"Load outside the run, the most in any repeat of a trial: {loads} (counted in the "
                     f"decision like the others)")
    if decided := v.get("verdict"):  # calibrate, harness 0.7.0+
        lines.append(f"Verdict on the Wilson bounds (FPR upper <= {decided['max_fpr']}, power lower >= "
                     f"{decided['min_power']}): {decided['status']}"
                     + (" (--quick)" if decided["quick"] else "")
                     + "".join(f"; {reason}" for reason in decided["reasons"]))
    return lines


def _tr(cells: list[str], tag: str = "td", cls: dict[int, str] | None = None) -> str:
    """A table row; `cls` maps a cell index to a CSS class."""
    attrs = {i: f' class="{c}"' for i, c in (cls or {}).items()}
    return "<tr>" + "".join(f"<{tag}{attrs.get(i, '')}>{_e(x)}</{tag}>" for i, x in enumerate(cells)) + "</tr>"


def _html_run(run: Any) -> str:
    man, s, rid = run.manifest or {}, run.summary or {}, _rid(run)
    conc, loads = _workloads(run.records or [])
    out = [f'<section id="{_e(rid)}"><h2>{_e(rid)}</h2><dl class="meta">']
    sha, dirty = text_or_na((man.get("model") or {}).get("weights_sha256")), (man.get("git") or {}).get("dirty")
    for label, value in _meta(man):
        badge = ' <span class="badge dirty">dirty</span>' if dirty and label == "git commit" else ""
        title = f' title="{_e(sha)}"' if label == "weights sha256" else ""
        out.append(f"<dt>{_e(label)}</dt><dd{title}>{_e(value)}{badge}</dd>")
    out.append("</dl>")
    if unavailable := _unavailable(man):
        out.append("<h3>Unavailable servers</h3><ul>"
                   + "".join(f"<li><b>{_e(lbl)}</b>: {_e(why)}</li>" for lbl, why in unavailable) + "</ul>")
    figs, note = _figures(run, conc)
    out += [f'<figure><img alt="{_e(cap)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            f"<figcaption>{_e(cap)}</figcaption></figure>" for cap, png in figs]
    out += [f'<p class="note">{_e(note)}</p>'] if note else []
    out.append('<div class="groups">')
    for g in s.get("groups") or []:
        key = (g.get("server"), g.get("case"))
        caption = " · ".join([text_or_na(key[0]), f"case {text_or_na(key[1])}"] + ([loads[key]] if key in loads else [])
                             + [f"n={text_or_na(g.get('n_repeats'))} repeats", "ok/error/incomplete " + _counts(g)])
        out.append(f"<table><caption>{_e(caption)}</caption>" + _tr(["metric", "median", "95% CI", "n"], "th"))
        out += [_tr([label] + _metric_cells((g.get("metrics") or {}).get(name))) for name, label in TABLE_METRICS]
        if "prompt_cache" in g:
            out.append(_tr(["cached prompt tokens", _cached_cell(g), "", ""]))
        out.append("</table>")
    out.append("</div>")
    if load := describe_load(run.records or []):
        out.append(f'<p class="note">{_e(load)}</p>')
    if comps := s.get("comparisons") or []:
        out.append("<h3>Comparisons</h3><table>" + _tr(list(COMPARISON_HEAD), "th"))
        for c in comps:  # a verdict is highlighted only when there is one
            v = c.get("verdict")
            out.append(_tr(_comparison_cells(c), cls={8: v} if v in ("faster", "slower") else None))
        out.append(f'</table><p class="note">{_e(COMPARISON_NOTE)}</p>')
    out.append(report_roofline.html_section(man, s, conc, tr=_tr))
    if val := s.get("validation"):
        out.append("<h3>Calibration of the comparison method</h3><ul>"
                   + "".join(f"<li>{_e(line)}</li>" for line in _validation_lines(val)) + "</ul>")
    if tools := s.get("tools"):
        out.append(report_tools.html_section(tools))
    if contracts := s.get("contracts"):
        out.append(report_contracts.html_section(contracts, run_path=run.path))
    if divergence := s.get("divergence"):
        out.append(report_divergence.html_section(divergence))
    if profile := s.get("profile"):
        out.append(report_profile.html_section(profile, tr=_tr, roofline=man.get("roofline")))
    out.append(f"<h3>Recompute from raw</h3><p>In {_e(_shown_path(run))}, {_e(_recomputed(run))}:</p>"
               f"<pre>{_e(_one_liner(run))}</pre></section>")
    return "\n".join(out)


_INTRO = ("Rendered from {n} stored run(s); nothing here was measured live. Medians over repeats with the "
          "95% CIs stored in summary.json; n is the number of repeats (or pairs, or trials) behind each number.")


def _html(runs: list, title: str, preface_html: str = "") -> str:
    nav = "".join(f'<li><a href="#{_e(_rid(r))}">{_e(_rid(r))}</a></li>' for r in runs)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<style>{_CSS}</style></head><body><h1>{_e(title)}</h1><p class="note">'
            f"{_e(_INTRO.format(n=len(runs)))}</p>{preface_html}<ul>{nav}</ul>\n"
            + "\n".join(_html_run(r) for r in runs) + "\n</body></html>\n")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |"


def _md_metric(m: dict | None, n_repeats: Any) -> str:
    """'median [CI]' (plus n when it differs from the group's), or 'median, CI n/a (n=k)'."""
    median, ci, n = _metric_cells(m)
    if not m or not ci.startswith("["):
        return median if not m else f"{median}, CI {ci}"
    return f"{median} {ci}" + (f" {n}" if m.get("n") != n_repeats else "")


def _md_run(run: Any) -> str:
    man, s = run.manifest or {}, run.summary or {}
    conc, loads = _workloads(run.records or [])
    dirty = " (dirty)" if (man.get("git") or {}).get("dirty") else ""
    out = [f"## {_rid(run)}", ""]
    out += [f"- {label}: {value}{dirty if label == 'git commit' else ''}" for label, value in _meta(man)]
    out += [f"- unavailable server {lbl}: {why}" for lbl, why in _unavailable(man)]
    if groups := s.get("groups") or []:
        cached = any("prompt_cache" in g for g in groups)
        head = (["server", "case", "load", "n", "ok/error/incomplete"] + [lbl for _, lbl in TABLE_METRICS]
                + (["cached prompt tokens"] if cached else []))
        out += ["", _md_row(head), "|" + "---|" * len(head)]
        for g in groups:
            key = (g.get("server"), g.get("case"))
            out.append(_md_row([text_or_na(key[0]), text_or_na(key[1]), loads.get(key, "n/a"), f"n={text_or_na(g.get('n_repeats'))}",
                                _counts(g)] + [_md_metric((g.get("metrics") or {}).get(name), g.get("n_repeats"))
                                               for name, _ in TABLE_METRICS]
                               + ([_cached_cell(g)] if cached else [])))
    if load := describe_load(run.records or []):
        out += ["", load]
    if comps := s.get("comparisons") or []:
        out += ["", _md_row(list(COMPARISON_HEAD)), "|" + "---|" * len(COMPARISON_HEAD)]
        for c in comps:
            cells = _comparison_cells(c)
            cells[8] = f"**{cells[8]}**" if c.get("verdict") in ("faster", "slower") else cells[8]
            out.append(_md_row(cells))
        out += ["", COMPARISON_NOTE]
    out += report_roofline.markdown(man, s, conc, row=_md_row)
    if val := s.get("validation"):
        out += ["", "Calibration of the comparison method:"] + [f"- {line}" for line in _validation_lines(val)]
    if tools := s.get("tools"):
        out += report_tools.markdown(tools, row=_md_row)
    if contracts := s.get("contracts"):
        out += report_contracts.markdown(contracts, run_path=run.path, row=_md_row)
    if divergence := s.get("divergence"):
        out += report_divergence.markdown(divergence, row=_md_row)
    if profile := s.get("profile"):
        out += report_profile.markdown(profile, row=_md_row, roofline=man.get("roofline"))
    out += ["", f"Recompute {_recomputed(run)} from raw, in `{_shown_path(run)}`:", "",
            "```sh", _one_liner(run), "```", ""]
    return "\n".join(out)


def _markdown(runs: list, title: str) -> str:
    return f"# {title}\n\n{_INTRO.format(n=len(runs))}\n\n" + "\n".join(_md_run(r) for r in runs)


def render(runs: list, out_dir: Path, *, title: str = DEFAULT_TITLE, preface_html: str = "") -> tuple[Path, Path]:
    """Write out_dir/index.html and out_dir/summary.md from stored runs; return both paths.
    `preface_html` (the published matrix) goes above the runs."""
    loaded = [_as_run(r) for r in runs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / "index.html", out_dir / "summary.md"
    html_path.write_text(_html(loaded, title, preface_html), encoding="utf-8")
    md_path.write_text(_markdown(loaded, title), encoding="utf-8")
    return html_path, md_path
