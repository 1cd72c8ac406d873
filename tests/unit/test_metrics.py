import json
import re

import numpy as np
import pytest

from harness import evidence, metrics, stats


def request(server="ours", case="short", repeat=0, index=0, *, status="ok", ttft=0.1, e2e=1.0,
            prompt=10, completion=10, itl=(), error=None):
    return {"type": "request", "server": server, "case": case, "repeat": repeat, "index": index,
            "concurrency": 1, "rate_rps": None, "start_s": 0.0, "ttft_s": ttft, "itl_s": list(itl),
            "e2e_s": e2e, "prompt_tokens": prompt, "completion_tokens": completion,
            "finish_reason": "length" if status == "ok" else None, "status": status, "error": error}


def run(server="ours", case="short", repeat=0, *, wall=2.0, rss=512.0):
    return {"type": "run", "server": server, "case": case, "repeat": repeat, "wall_s": wall, "peak_rss_mb": rss}


def test_metric_names_are_the_contract():
    assert len(metrics.METRIC_NAMES) == 22 and metrics.METRIC_NAMES[-3:] == ("peak_rss_mb", "foreign_cpu", "steal_cpu")
    schema = json.loads((evidence.SCHEMA_DIR / "summary.schema.json").read_text())
    assert schema["$defs"]["metric_name"]["enum"] == list(metrics.METRIC_NAMES)


def test_repeat_metrics_exact_values_and_errors_do_not_leak():
    ok = [request(index=0, ttft=0.2, e2e=1.0, prompt=10, completion=5, itl=[0.1, 0.2, 0.3, 0.2]),
          request(index=1, ttft=0.4, e2e=2.0, prompt=20, completion=9, itl=[0.2] * 8)]
    error = request(index=2, status="error", ttft=9.0, e2e=50.0, prompt=1000, completion=1000,
                    itl=[9.0], error="HTTP 500")
    m = metrics.repeat_metrics(ok + [error], run(wall=4.0, rss=700.0))
    assert set(m) == set(metrics.METRIC_NAMES) - set(metrics.LOAD_METRICS)  # a run record before harness 0.9.0
    loaded = metrics.repeat_metrics(ok, {**run(wall=4.0, rss=700.0), "foreign_cpu": 0.02, "steal_cpu": None})
    assert set(loaded) == set(metrics.METRIC_NAMES) and loaded["foreign_cpu"] == 0.02 and loaded["steal_cpu"] is None
    assert m["requests_per_s"] == 0.5
    assert m["output_tok_per_s"] == 14 / 4
    assert m["total_tok_per_s"] == 44 / 4
    assert m["ttft_mean_s"] == pytest.approx(0.3) and m["ttft_p50_s"] == pytest.approx(0.3)
    assert m["ttft_p95_s"] == pytest.approx(0.2 + 0.95 * 0.2)
    # TPOT per request: (1.0 - 0.2) / 4 = 0.2 and (2.0 - 0.4) / 8 = 0.2
    assert m["tpot_mean_s"] == pytest.approx(0.2) and m["tpot_p99_s"] == pytest.approx(0.2)
    gaps = [0.1, 0.2, 0.3, 0.2] + [0.2] * 8
    assert m["itl_mean_s"] == pytest.approx(np.mean(gaps)) and m["itl_p99_s"] == pytest.approx(np.percentile(gaps, 99))
    assert m["e2e_mean_s"] == 1.5 and m["e2e_p50_s"] == 1.5
    assert m["peak_rss_mb"] == 700.0
    assert m == metrics.repeat_metrics(ok, run(wall=4.0, rss=700.0)) | {"requests_per_s": 0.5}


def test_repeat_metrics_edge_cases():
    one_token = request(completion=1, ttft=0.3, e2e=0.3, itl=[])
    m = metrics.repeat_metrics([one_token], run(wall=1.0, rss=None))
    assert m["tpot_mean_s"] is None and m["itl_p50_s"] is None and m["peak_rss_mb"] is None
    assert m["ttft_p50_s"] == 0.3
    failed = metrics.repeat_metrics([request(status="incomplete", e2e=None)], run(wall=1.0))
    assert failed["requests_per_s"] == 0.0 and failed["output_tok_per_s"] == 0.0
    assert failed["e2e_mean_s"] is None and failed["ttft_p99_s"] is None


def records_for(server, case, throughputs, *, wall=2.0):
    """One ok request per repeat whose completion tokens give the wanted tok/s."""
    out = []
    for i, tput in enumerate(throughputs):
        out += [request(server, case, i, completion=int(tput * wall)), run(server, case, i, wall=wall)]
    return out


def test_summarize_groups_counts_and_describe():
    recs = records_for("ours", "short", [100, 110, 90]) + [request("ours", "short", 1, 5, status="error",
                                                                   error="boom")]
    s = metrics.summarize(recs)
    assert s["schema_version"] == 1 and s["comparisons"] == []
    (g,) = s["groups"]
    assert (g["server"], g["case"], g["n_repeats"]) == ("ours", "short", 3)
    assert g["counts"] == {"ok": 3, "error": 1, "incomplete": 0}
    assert [r["output_tok_per_s"] for r in g["per_repeat"]] == [100, 110, 90]
    assert g["metrics"]["output_tok_per_s"] == stats.describe([100, 110, 90])
    assert "tpot_mean_s" in g["metrics"] and "itl_mean_s" not in g["metrics"]  # no gaps: left out


def test_summarize_comparisons_pair_by_repeat_and_expand_star():
    recs = (records_for("ours", "short", [110, 121, 99, 132]) + records_for("peer", "short", [100, 110, 90, 120])
            + records_for("ours", "long", [50, 51, 52]) + records_for("peer", "long", [50, 51, 52])
            + records_for("ours", "solo", [10, 11]))
    s = metrics.summarize(list(reversed(recs)), comparisons=[("*", "ours", "peer")])
    assert [(g["server"], g["case"]) for g in s["groups"]] == [
        ("ours", "solo"), ("peer", "long"), ("ours", "long"), ("peer", "short"), ("ours", "short")]
    by_case = {c["case"]: c for c in s["comparisons"]}
    assert list(by_case) == ["long", "short"]  # first-seen case order, "solo" only ran on one server
    short = by_case["short"]
    assert short["ratio"] == pytest.approx(1.1) and short["verdict"] == "faster"
    assert short["n_pairs"] == 4 and short["metric"] == "output_tok_per_s"
    assert by_case["long"]["verdict"] == "no detectable difference"


def test_summarize_comparison_errors():
    recs = records_for("ours", "short", [1, 2]) + records_for("peer", "long", [1, 2])
    with pytest.raises(ValueError, match="did not both run"):
        metrics.summarize(recs, comparisons=[("short", "ours", "peer")])
    with pytest.raises(ValueError, match="no records"):
        metrics.summarize(recs, comparisons=[("*", "ours", "ghost")])
    with pytest.raises(ValueError, match="no run record"):
        metrics.summarize([request(repeat=3)])
    dead = records_for("ours", "x", [10, 10])
    for rep in (0, 1):  # every peer request failed: 0 tok/s has no ratio, but the failures count
        dead += [request("peer", "x", rep, status="error", error="e"), run("peer", "x", rep)]
    (c,) = metrics.summarize(dead, comparisons=[("x", "ours", "peer")])["comparisons"]
    assert c["ratio"] is None and c["n_pairs"] == 0
    assert c["failed_repeats"] == {"a": 0, "b": 2} and c["verdict"] == "faster"
    # A metric no repeat could measure (one-token answers have no TPOT) is still skipped, with a warning.
    single = [request("ours", "y", i, completion=1) for i in (0, 1)] + [run("ours", "y", i) for i in (0, 1)]
    single += [request("peer", "y", i, completion=1) for i in (0, 1)] + [run("peer", "y", i) for i in (0, 1)]
    with pytest.warns(RuntimeWarning, match="fewer than 2 usable repeat pairs"):
        assert metrics.summarize(single, comparisons=[metrics.Comparison("y", "ours", "peer", ("tpot_p50_s",))]
                                 )["comparisons"] == []


def documented_one_liner() -> list[str]:
    """The >>> lines of harness.metrics' docstring, exactly as documented."""
    return [m.group(1) for m in re.finditer(r"^>>> (.*)$", metrics.__doc__, re.M)]


@pytest.mark.parametrize("compress", [False, True])
def test_pandas_one_liner_recomputes_summarize_medians(tmp_path, compress):
    rng = np.random.default_rng(3)
    recs = []
    for server in ("ours", "peer"):
        for case in ("short", "1"):  # "1" checks that labels stay strings
            for rep in range(5):
                for i in range(4):
                    status = "error" if (rep + i) % 7 == 0 else "ok"
                    recs.append(request(server, case, rep, i, status=status, completion=int(rng.integers(1, 200)),
                                        error="x" if status == "error" else None))
                recs.append(run(server, case, rep, wall=float(rng.uniform(1, 3))))
    # One repeat whose requests all failed: 0 tok/s in both computations.
    recs += [request("peer", "short", 5, 0, status="error", error="x"), run("peer", "short", 5)]
    text = "".join(json.dumps(r) + "\n" for r in recs)
    path = tmp_path / ("raw.jsonl.gz" if compress else "raw.jsonl")
    if compress:
        import gzip
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)

    lines = documented_one_liner()
    namespace = {"RAW_JSONL": str(path)}
    for line in lines[:-1]:
        exec(line, namespace)
    medians = eval(lines[-1], namespace)

    summary = metrics.summarize(recs)
    expected = {(g["server"], g["case"]): g["metrics"]["output_tok_per_s"]["median"] for g in summary["groups"]}
    assert {k: pytest.approx(v) for k, v in medians.to_dict().items()} == expected


def test_summarize_output_satisfies_the_summary_schema():
    import jsonschema

    recs = (records_for("ours", "short", [110, 121, 99, 132, 100, 105]) + records_for("peer", "short", [100] * 6)
            + records_for("ours", "once", [10]))
    s = metrics.summarize(recs, comparisons=[("short", "ours", "peer")])
    assert "wilcoxon_p" in s["comparisons"][0]  # 6 pairs
    assert s["groups"][-1]["metrics"]["output_tok_per_s"]["ci_low"] is None  # one repeat
    schema = json.loads((evidence.SCHEMA_DIR / "summary.schema.json").read_text())
    jsonschema.validate({"run_id": evidence.new_run_id("compare"), **s, "validation": None}, schema,
                        cls=jsonschema.Draft202012Validator)
