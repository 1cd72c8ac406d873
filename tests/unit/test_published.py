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
