"""reports/published.md is computed from committed evidence, never edited by hand; validate
--from-evidence decides as publish does; the server reads the matrix to warn about held profiles."""

import json
from pathlib import Path

import pytest
from harness import published
from harness.cli import main
from harness.evidence import iter_runs
from harness.gates import EXIT_CODES

ROOT = Path(__file__).resolve().parents[2]
EVIDENCE, REPORTS = ROOT / "evidence", ROOT / "reports"


@pytest.fixture(scope="module")
def matrix():
    return published.compute(published.tracked_runs(list(iter_runs(EVIDENCE)), EVIDENCE))


def test_committed_published_md_is_a_regeneration(matrix):
    assert (REPORTS / "published.md").read_text(encoding="utf-8") == published.markdown(matrix, EVIDENCE), \
        "reports/published.md differs from the committed evidence: run `nox -s publish` and commit reports/"


def test_committed_published_json_is_a_regeneration(matrix):
    committed = json.loads((REPORTS / "published.json").read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(published.document(matrix, EVIDENCE)))


def test_every_targeted_pair_has_a_decision_with_its_runs(matrix):
    targeted = {(p.name, m) for p in matrix.profiles.profiles.values() for m in p.models}
    assert {(d.profile, d.model) for d in matrix.decisions} == targeted
    for d in matrix.decisions:
        assert d.published == (d.decision != "hold")
        assert all(r.run_id for r in d.results if r.status != "missing")


def test_validate_from_evidence_decides_as_publish_does(capsys):
    cell = next(c for c in json.loads((REPORTS / "published.json").read_text())["cells"]
                if c["profile"] == "text-default")
    code = main(["validate", "--profile", "text-default", "--model", cell["model"], "--from-evidence",
                 "--as-of", json.loads((REPORTS / "published.json").read_text())["as_of"]])
    assert code == EXIT_CODES[cell["decision"]]
    assert cell["decision"] in capsys.readouterr().out


def test_the_matrix_renders_the_same_twice(matrix):
    assert published.markdown(matrix, EVIDENCE) == published.markdown(matrix, EVIDENCE)
    assert "<table>" in published.html_section(matrix, EVIDENCE)


def test_publish_check_passes_on_the_committed_reports(capsys):
    assert main(["publish", "--check"]) == 0


def test_throughput_against_peers_has_one_table_per_backend(tmp_path):
    from types import SimpleNamespace

    def run(run_id: str, backend: str, ratio: float):
        manifest = {"run_id": run_id, "suite": "throughput", "model": {"id": "m"}, "profile": {"name": "p"},
                    "workload": {"repeats": 3}, "backend": {"backend": backend, "dtype": "float32"},
                    "host": {"cpu": "a cpu", "gpu": "a gpu" if backend == "cuda" else None}}
        summary = {"comparisons": [{"case": "c1", "a": "ours", "b": "mlx-lm", "metric": "output_tok_per_s",
                                    "ratio": ratio, "ci_low": ratio - 0.1, "ci_high": ratio + 0.1,
                                    "n_pairs": 3, "verdict": "faster"}]}
        return SimpleNamespace(path=tmp_path / run_id, manifest=manifest, summary=summary)

    runs = [run("gpu-new", "cuda", 1.4), run("cpu-new", "cpu", 1.7), run("cpu-old", "cpu", 1.1)]  # newest first
    # the GPU run's server had flags beyond its profile: the table must say so
    runs[0].manifest["servers"] = [
        {"label": "mlx-lm", "argv": ["<venv>/bin/python3", "-m", "mlx_lm.server", "--model", "x"]},
        {"label": "ours", "argv": ["<venv>/bin/python3", "-m", "serving", "serve", "--model", "m", "--port", "5",
                                   "--profile", "p", "--dtype", "float32", "--decode-step=compiled"]}]
    runs[1].manifest["servers"] = [{"label": "ours", "argv": ["py", "-m", "serving", "serve", "--model", "m",
                                                              "--port=5", "--profile", "p"]}]
    runs.append(run("cpu-oldest", "cpu", 0.9))
    runs[-1].summary["comparisons"][0]["case"] = "c10"  # a case no newer run has: still shown
    text = "\n".join(published._throughput_md(SimpleNamespace(models=["m"], runs=runs), tmp_path))
    gpu, cpu = text.split("`m` on cpu")
    assert "`m` on cuda" in gpu and "| a gpu, float32 | `--dtype float32 --decode-step=compiled` |" in gpu
    assert "| a cpu, float32 | — |" in cpu and "--decode-step" not in cpu
    assert "[cpu-new](" in cpu and "[cpu-oldest](" in cpu and "[cpu-old](" not in cpu
    assert "0.900 [0.800, 1.000]" in cpu
    assert "1.400 [1.300, 1.500]" in text and "1.700 [1.600, 1.800]" in text and "1.100" not in text
