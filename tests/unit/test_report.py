"""The evidence report renders only stored numbers, says n, never prints a null CI,
and its pandas one-liner recomputes the stored medians from raw.jsonl."""

from __future__ import annotations

import base64
import gzip
import json
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("pandas")

from harness.report import RECOMPUTE_ONE_LINER, render  # noqa: E402
from harness.report_format import fmt_ci, fmt_num  # noqa: E402

UNAVAILABLE_REASON = "vllm-mlx is not installed on this host"


@dataclass(frozen=True)
class FakeRun:
    path: Path
    manifest: dict
    records: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def _manifest(run_id: str, suite: str, servers: list[dict], *, dirty: bool) -> dict:
    return {
        "schema_version": 1, "run_id": run_id, "suite": suite,
        "started_at": "2025-01-02T03:04:05Z", "finished_at": "2025-01-02T03:14:05Z",
        "harness_version": "0.1.0", "git": {"commit": "0123456789abcdef0123", "dirty": dirty},
        "profile": {"name": "default", "flags": {}},
        "model": {"id": "smollm2-135m", "weights_sha256": "ab" * 32, "source": "catalog"},
        "backend": {"backend": "mlx", "device": "cpu", "blas": "openblas", "dtype": "float16",
                    "mlx_version": "0.32.4"},
        "versions": {"python": "3.11.7", "mlx": "0.32.4", "mlx_lm": "0.32.2"},
        "host": {"os": "Linux 6.1", "cpu": "x86_64 16-core", "gpu": None, "cores": 16, "memory_gb": 128},
        "engine_mode": "batch",
        "servers": servers,
        "workload": {"cases": [], "repeats": 3, "warmup_requests": 2, "interleaving": "abab"},
        "argv": ["python", "-m", "harness", "run"],
    }


def _server(label: str, status: str = "ran", reason: str | None = None) -> dict:
    return {"label": label, "kind": "mlx-proof" if label == "ours" else label, "revision": None,
            "argv": ["serve"], "status": status, "reason": reason, "health": None}


def _stat(values: list[float]) -> dict:
    n = len(values)
    return {"n": n, "median": statistics.median(values), "mean": statistics.fmean(values),
            "ci_low": min(values) if n > 1 else None, "ci_high": max(values) if n > 1 else None,
            "confidence": 0.95, "method": "order-statistic"}


def _make_run(run_id: str, suite: str, servers: list[dict], cases: dict[str, int], repeats: int,
              *, speed: dict[str, float], comparisons=(), validation=None, dirty=False) -> FakeRun:
    """Raw records for every (ran server, case, repeat) and a summary computed from them."""
    records, groups = [], []
    for srv in (s["label"] for s in servers if s["status"] == "ran"):
        for case, conc in cases.items():
            per_repeat = []
            for rep in range(repeats):
                n_req, toks, wall = 4 * conc, 16 + rep, (2.0 + 0.1 * rep) / speed[srv] * (1 + 0.4 / conc)
                oks = []
                for i in range(n_req):
                    status = "error" if (i == n_req - 1 and rep == 0 and conc > 1) else "ok"
                    ttft, gap = (0.05 + 0.01 * i) / speed[srv], 0.02 / speed[srv]
                    rec = {"type": "request", "server": srv, "case": case, "repeat": rep, "index": i,
                           "concurrency": conc, "rate_rps": None, "start_s": 0.01 * i,
                           "ttft_s": ttft if status == "ok" else None,
                           "itl_s": [gap * (1 + 0.1 * (j % 3)) for j in range(toks - 1)] if status == "ok" else [],
                           "e2e_s": ttft + gap * (toks - 1) if status == "ok" else None,
                           "prompt_tokens": 32, "completion_tokens": toks if status == "ok" else None,
                           "finish_reason": "length" if status == "ok" else None, "status": status,
                           "error": None if status == "ok" else "HTTP 503"}
                    records.append(rec)
                    oks += [rec] if status == "ok" else []
                records.append({"type": "run", "server": srv, "case": case, "repeat": rep, "wall_s": wall,
                                "peak_rss_mb": 900.0 + rep})
                ttfts = sorted(r["ttft_s"] for r in oks)
                gaps = sorted(g for r in oks for g in r["itl_s"])
                e2es = sorted(r["e2e_s"] for r in oks)
                out_toks = sum(r["completion_tokens"] for r in oks)
                per_repeat.append({
                    "requests_per_s": len(oks) / wall, "output_tok_per_s": out_toks / wall,
                    "total_tok_per_s": (out_toks + 32 * len(oks)) / wall,
                    "ttft_p50_s": statistics.median(ttfts), "ttft_p95_s": ttfts[int(0.95 * (len(ttfts) - 1))],
                    "itl_p50_s": statistics.median(gaps), "itl_p95_s": gaps[int(0.95 * (len(gaps) - 1))],
                    "e2e_p50_s": statistics.median(e2es), "peak_rss_mb": 900.0 + rep})
            status_of = [r["status"] for r in records if r.get("type") == "request"
                         and r["server"] == srv and r["case"] == case]
            groups.append({"server": srv, "case": case, "n_repeats": repeats,
                           "counts": {k: status_of.count(k) for k in ("ok", "error", "incomplete")},
                           "per_repeat": per_repeat,
                           "metrics": {m: _stat([p[m] for p in per_repeat]) for m in per_repeat[0]}})
    summary = {"schema_version": 1, "run_id": run_id, "groups": groups,
               "comparisons": list(comparisons), "validation": validation}
    return FakeRun(Path("evidence") / "smollm2-135m" / "default" / run_id,
                   _manifest(run_id, suite, servers, dirty=dirty), records, summary)


def throughput_run() -> FakeRun:
    comparison = {"case": "c4", "a": "ours", "b": "mlx-lm", "metric": "output_tok_per_s",
                  "ratio": 1.21, "ci_low": 1.12, "ci_high": 1.3, "confidence": 0.95, "method": "bootstrap",
                  "p_value": 0.0004, "test": "permutation", "n_pairs": 3, "verdict": "faster"}
    return _make_run("20250102T030405Z-throughput-a1b2c3", "throughput",
                     [_server("ours"), _server("mlx-lm")], {"c1": 1, "c2": 2, "c4": 4}, 3,
                     speed={"ours": 1.2, "mlx-lm": 1.0}, comparisons=[comparison], dirty=True)


def validation_run() -> FakeRun:
    validation = {"aa_trials": 200, "aa_flagged": 9, "false_positive_rate": 0.045, "fpr_ci": [0.024, 0.083],
                  "planted_trials": 200, "planted_flagged": 188, "power": 0.94, "power_ci": [0.898, 0.965],
                  "planted_slowdown": 0.1, "alpha": 0.05, "threshold": 0.05, "pairs_per_trial": 6,
                  "aa_significant": 11, "planted_significant": 191,
                  "planted_ratio": {"ratio": 0.917, "ci_low": 0.912, "ci_high": 0.922, "n_pairs": 1200}}
    comparison = {"case": "c1", "a": "A", "b": "B", "metric": "output_tok_per_s", "ratio": 1.004,
                  "ci_low": 0.97, "ci_high": 1.04, "confidence": 0.95, "method": "bootstrap", "p_value": 0.81,
                  "test": "permutation", "n_pairs": 1, "verdict": "no detectable difference"}
    return _make_run("20250103T030405Z-validate-d4e5f6", "validate",
                     [_server("ours"), _server("vllm-mlx", "unavailable", UNAVAILABLE_REASON)],
                     {"c1": 1}, 1, speed={"ours": 1.0}, comparisons=[comparison], validation=validation)


def _text_without_images(text: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    html_path, md_path = render([throughput_run(), validation_run()], out)
    return html_path, md_path, html_path.read_text("utf-8"), md_path.read_text("utf-8")


def test_files_written_where_asked(rendered, tmp_path):
    html_path, md_path, _, _ = rendered
    assert html_path.name == "index.html" and md_path.name == "summary.md"
    assert html_path.exists() and md_path.exists()


def test_html_has_every_server_reason_verdict_and_n(rendered):
    _, _, page, _ = rendered
    for label in ("ours", "mlx-lm", "vllm-mlx"):
        assert label in page
    assert UNAVAILABLE_REASON in page
    assert '<td class="faster">faster</td>' in page
    assert 'class="no detectable difference"' not in page  # highlighted only for faster/slower
    assert "n=3" in page
    assert "n/a (n=1)" in page  # single-repeat CIs are null and say so
    assert "dirty" in page and "abababababab" in page and "0123456789ab" in page
    assert "Wilson" in page and "0.045" in page and "188 of 200" in page
    assert "6 interleaved pairs per trial" in page and "A/A flags 11 and the planted slowdown 191" in page
    assert "planted/A = 0.917 [0.912, 0.922] over n=1200 pairs" in page


def test_html_is_self_contained_with_png_figures(rendered):
    _, _, page, _ = rendered
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 4  # throughput curve, latency ECDFs, two forest plots
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)
    assert not re.search(r'(src|href)="https?:', page)
    assert "<script" not in page


def test_no_null_or_nan_printed(rendered):
    _, _, page, md = rendered
    for text in (_text_without_images(page), md):
        assert not re.search(r"\bNone\b|\bnan\b|\bNaN\b|\bnull\b", text)


def test_markdown_has_tables_n_and_one_liner(rendered):
    _, _, _, md = rendered
    assert RECOMPUTE_ONE_LINER in md
    assert "| ours | c4 | concurrency 4 | n=3 |" in md
    assert "**faster**" in md and UNAVAILABLE_REASON in md
    assert "CI n/a (n=1)" in md


def test_formatting():
    assert fmt_num(1234.5) == "1,234" or fmt_num(1234.5) == "1,235"
    assert fmt_num(12.345) == "12.3" and fmt_num(0.012345) == "0.0123" and fmt_num(0) == "0"
    assert fmt_num(None) == fmt_num(float("nan")) == "n/a"
    assert fmt_ci(None, None, 1) == "n/a (n=1)" and fmt_ci(1.0, 2.0, 3) == "[1.00, 2.00]"


def _parse_series(stdout: str) -> dict[tuple[str, str], float]:
    """Parse pandas' printed MultiIndex Series (server names are shown once per block)."""
    values, server = {}, None
    for line in stdout.splitlines()[1:]:
        parts = line.split()
        if not parts or line.startswith(("dtype:", "Name:")):
            continue
        if len(parts) == 3:
            server = parts[0]
        values[(server, parts[-2])] = float(parts[-1])
    return values


@pytest.mark.parametrize("compressed", [False, True])
def test_one_liner_recomputes_summary_medians(tmp_path, compressed):
    run = throughput_run()
    body = "".join(json.dumps(r) + "\n" for r in run.records).encode()
    name = "raw.jsonl.gz" if compressed else "raw.jsonl"
    (tmp_path / name).write_bytes(gzip.compress(body) if compressed else body)
    command = RECOMPUTE_ONE_LINER.replace("'raw.jsonl'", f"'{name}'")
    code = command.split('"', 1)[1].rsplit('"', 1)[0]  # the -c argument, run with this interpreter
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          check=True)
    printed = _parse_series(done.stdout)
    expected = {(g["server"], g["case"]): g["metrics"]["output_tok_per_s"]["median"]
                for g in run.summary["groups"]}
    assert printed.keys() == expected.keys()
    for key, value in expected.items():
        assert printed[key] == pytest.approx(value, rel=1e-5), key


def test_run_directories_load_without_harness_evidence(tmp_path):
    run = validation_run()
    d = tmp_path / "run"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps(run.manifest))
    (d / "summary.json").write_text(json.dumps(run.summary))
    (d / "raw.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in run.records).encode()))
    _, md_path = render([d], tmp_path / "out")
    md = md_path.read_text("utf-8")
    assert run.manifest["run_id"] in md and "'raw.jsonl.gz'" in md


def test_without_matplotlib_the_report_says_figures_are_omitted(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "harness.report_figures", None)  # importing it now raises ImportError
    html_path, _ = render([throughput_run()], tmp_path)
    page = html_path.read_text("utf-8")
    assert "Figures omitted" in page and "data:image/png" not in page


def test_sparse_evidence_renders_without_nulls(tmp_path):
    """No records, a null CI in a comparison, a metric missing: still no None/nan, and n/a says n."""
    run = throughput_run()
    groups = [dict(g, metrics={k: v for k, v in g["metrics"].items() if k != "peak_rss_mb"})
              for g in run.summary["groups"]]
    comparison = dict(run.summary["comparisons"][0], ci_low=None, ci_high=None, p_value=None,
                      verdict="no detectable difference")
    sparse = FakeRun(run.path, run.manifest, (), dict(run.summary, groups=groups, comparisons=[comparison]))
    html_path, md_path = render([sparse], tmp_path)
    for text in (_text_without_images(html_path.read_text("utf-8")), md_path.read_text("utf-8")):
        assert not re.search(r"\bNone\b|\bnan\b|\bnull\b", text)
        assert "n/a (n=3)" in text and "not recorded" in text


def test_cache_labels_ttft_direction_and_cached_share_render(tmp_path):
    run = throughput_run()
    groups = [dict(g, prompt_cache={"requests": 12, "cached_tokens": 300, "prompt_tokens": 400, "fraction": 0.75})
              if g["server"] == "ours" else g for g in run.summary["groups"]]
    ttft = dict(run.summary["comparisons"][0], metric="ttft_p50_s", ratio=0.5, ci_low=0.4, ci_high=0.6,
                cache="warm-vs-cold")
    manifest = dict(run.manifest, servers=[dict(s, prefix_cache="on") for s in run.manifest["servers"]])
    cached = FakeRun(run.path, manifest, run.records,
                     dict(run.summary, groups=groups, comparisons=[*run.summary["comparisons"], ttft]))
    html_path, md_path = render([cached], tmp_path)
    for text in (_text_without_images(html_path.read_text("utf-8")), md_path.read_text("utf-8")):
        assert "warm-vs-cold" in text and "below 1 for times" in text
        assert "300 of 400 (75%), n=12 requests" in text and "ours on, mlx-lm on" in text
        assert not re.search(r"\bNone\b|\bnan\b|\bnull\b", text)
    assert "| cached prompt tokens |" in md_path.read_text("utf-8")
