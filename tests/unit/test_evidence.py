import copy
import json
import re
import warnings

import pytest

from harness import evidence, metrics
from harness.evidence import EvidenceError, EvidenceWarning

MODEL = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"


def make_run(root, *, suite="throughput", started_at="2026-01-02T03:04:05+00:00", n_requests=4, model=MODEL):
    run_id = evidence.new_run_id(suite)
    env = evidence.environment()
    manifest = {
        "schema_version": 1, "run_id": run_id, "suite": suite,
        "started_at": started_at, "finished_at": started_at,
        "harness_version": evidence.HARNESS_VERSION, "git": env["git"],
        "profile": {"name": "default", "flags": {"max_batch": 8}},
        "model": {"id": model, "weights_sha256": "0" * 64, "source": "catalog"},
        "backend": {"backend": "mlx", "device": "cpu", "blas": "openblas", "dtype": "bfloat16",
                    "mlx_version": env["versions"]["mlx"]},
        "versions": env["versions"], "host": env["host"], "engine_mode": "batched",
        "servers": [{"label": "ours", "kind": "mlx-proof", "revision": None, "argv": ["mlx-proof", "serve"],
                     "status": "ran", "reason": None, "health": {"ok": True}}],
        "workload": {"cases": [{"name": "short"}], "repeats": 2, "warmup_requests": 1,
                     "interleaving": "none"},
        "argv": ["harness", "bench"],
    }
    records = []
    for rep in range(2):
        for i in range(n_requests):
            records.append({"type": "request", "server": "ours", "case": "short", "repeat": rep, "index": i,
                            "concurrency": 1, "rate_rps": None, "start_s": 0.01 * i, "ttft_s": 0.1,
                            "itl_s": [0.02] * 9, "e2e_s": 0.3, "prompt_tokens": 12, "completion_tokens": 10,
                            "finish_reason": "length", "status": "ok", "error": None})
        records.append({"type": "run", "server": "ours", "case": "short", "repeat": rep, "wall_s": 1.0 + rep,
                        "peak_rss_mb": 800.0})
    summary = {"run_id": run_id, **metrics.summarize(records), "validation": None}
    directory = evidence.run_dir(root, model_id=model, profile="default", run_id=run_id)
    return directory, manifest, records, summary


def test_environment_shape():
    env = evidence.environment()
    assert set(env) == {"git", "versions", "host"}
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", env["git"]["commit"])
    assert isinstance(env["git"]["dirty"], bool)
    assert set(env["versions"]) == {"python", "mlx", "mlx_lm"}
    assert set(env["host"]) == {"os", "cpu", "gpu", "cores", "memory_gb"} and env["host"]["memory_gb"] > 0


def test_environment_outside_git(tmp_path):
    git = evidence.environment(repo=tmp_path)["git"]
    assert (git["commit"], git["dirty"]) == ("unknown", False)
    assert git["source_sha256"] == evidence.source_sha256(tmp_path)  # still names the code


def test_source_digest_follows_the_files_not_git(tmp_path):
    (tmp_path / "serving").mkdir()
    code = tmp_path / "serving" / "a.py"
    code.write_text("x = 1\n")
    before = evidence.source_sha256(tmp_path)
    (tmp_path / "serving" / "notes.md").write_text("docs are not code")
    assert evidence.source_sha256(tmp_path) == before
    code.write_text("x = 2\n")
    assert evidence.source_sha256(tmp_path) != before


def test_run_id_and_safe_paths(tmp_path):
    run_id = evidence.new_run_id("compare")
    assert re.fullmatch(r"\d{8}T\d{6}Z-compare-[0-9a-f]{6}", run_id)
    with pytest.raises(ValueError):
        evidence.new_run_id("nonsense")
    d = evidence.run_dir(tmp_path, model_id="org/Qwen2.5-0.5B", profile="../etc", run_id=run_id)
    assert d == tmp_path / "org--Qwen2.5-0.5B" / "_.--etc" / run_id
    assert evidence.path_safe("..") == "_." and evidence.path_safe("a b:c") == "a_b_c"
    with pytest.raises(ValueError):
        evidence.run_dir(tmp_path, model_id="m", profile="p", run_id="../x")


def test_round_trip(tmp_path):
    directory, manifest, records, summary = make_run(tmp_path)
    assert evidence.write_run(directory, manifest=manifest, records=records, summary=summary) == directory
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "raw.jsonl", "summary.json"]
    run = evidence.read_run(directory)
    assert run.path == directory and run.manifest == manifest and run.summary == summary
    assert list(run.records) == records
    assert [p.name for p in directory.parent.iterdir()] == [directory.name]  # no temp dir left behind
    with pytest.raises(FileExistsError):
        evidence.write_run(directory, manifest=manifest, records=records, summary=summary)


def test_unknown_manifest_field_is_rejected_and_nothing_written(tmp_path):
    directory, manifest, records, summary = make_run(tmp_path)
    manifest["surprise"] = 1
    with pytest.raises(EvidenceError, match="kept, unpublished"):
        evidence.write_run(directory, manifest=manifest, records=records, summary=summary)
    assert not directory.exists()
    # ...but what was measured is set aside, never lost
    kept = directory.parent / f".rejected-{directory.name}"
    assert json.loads((kept / "manifest.json").read_text())["surprise"] == 1
    assert len((kept / "raw.jsonl").read_text().splitlines()) == len(records)


def test_contract_records_accept_every_capability_and_model_kind_the_suite_has():
    from suites.contracts.cases import CAPABILITIES, MODELS

    schema = json.loads((evidence.SCHEMA_DIR / "raw_record.schema.json").read_text())
    case = schema["$defs"]["contract_case"]["properties"]
    assert set(case["capability"]["enum"]) == set(CAPABILITIES)
    assert set(case["model"]["enum"]) == set(MODELS)


def test_wrong_status_is_rejected_with_its_line(tmp_path):
    directory, manifest, records, summary = make_run(tmp_path)
    records[1]["status"] = "maybe"
    with pytest.raises(EvidenceError, match=r"raw.jsonl line 2 at /status: 'maybe' is not one of"):
        evidence.write_run(directory, manifest=manifest, records=records, summary=summary)


@pytest.mark.parametrize("mutate, message", [
    (lambda m, r, s: r[0].update(status="error"), "error"),                      # error without a message
    (lambda m, r, s: r[0].update(e2e_s=None), "e2e_s"),                           # ok without e2e
    (lambda m, r, s: r[-1].update(extra=1), "extra"),                             # run record field
    (lambda m, r, s: s["groups"][0]["metrics"].update(bogus_s={}), "bogus_s"),    # unknown metric
    (lambda m, r, s: s.update(run_id=evidence.new_run_id("throughput")), "differs"),
    (lambda m, r, s: m.update(started_at="2026-01-02 03:04"), "started_at"),
    (lambda m, r, s: m.update(finished_at="2026-01-01T00:00:00Z"), "finished_at is before started_at"),
    (lambda m, r, s: m.update(finished_at="2026-13-01T00:00:00Z"), "month must be in 1..12"),
    (lambda m, r, s: s["groups"][0]["per_repeat"][0].update(output_tok_per_s=float("nan")), "non-finite"),
])
def test_contract_violations_are_rejected(tmp_path, mutate, message):
    directory, manifest, records, summary = make_run(tmp_path)
    mutate(manifest, records, summary)
    with pytest.raises(EvidenceError, match=message):
        evidence.write_run(directory, manifest=manifest, records=records, summary=summary)


def test_large_raw_is_gzipped(tmp_path, monkeypatch):
    # Lowering the threshold tests the branch without validating megabytes of records.
    monkeypatch.setattr(evidence, "GZIP_OVER_BYTES", 2_000)
    small_dir, *small = make_run(tmp_path, n_requests=1)
    evidence.write_run(small_dir, manifest=small[0], records=small[1], summary=small[2])
    assert (small_dir / "raw.jsonl").exists()
    directory, manifest, records, summary = make_run(tmp_path, n_requests=10)
    evidence.write_run(directory, manifest=manifest, records=records, summary=summary)
    assert (directory / "raw.jsonl.gz").exists() and not (directory / "raw.jsonl").exists()
    assert list(evidence.read_run(directory).records) == records


def test_default_gzip_threshold_is_200_kilobytes():
    assert evidence.GZIP_OVER_BYTES == 200_000


def test_iter_runs_newest_first_and_skips_invalid(tmp_path):
    stamps = ["2026-01-02T00:00:00+00:00", "2026-03-01T00:00:00Z", "2026-02-01T12:00:00+02:00"]
    written = {}
    for i, stamp in enumerate(stamps):
        directory, manifest, records, summary = make_run(tmp_path, started_at=stamp, model=f"m{i}")
        evidence.write_run(directory, manifest=manifest, records=records, summary=summary)
        written[stamp] = directory
    broken = written[stamps[0]].parent / "20260101T000000Z-throughput-abcdef"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    (written[stamps[0]].parent / ".unfinished.tmp").mkdir()  # in-progress writes are not warned about

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = list(evidence.iter_runs(tmp_path))
    assert [r.path for r in runs] == [written[stamps[1]], written[stamps[2]], written[stamps[0]]]
    assert [w.category for w in caught] == [EvidenceWarning] and str(broken) in str(caught[0].message)


def test_read_rejects_tampered_files(tmp_path):
    directory, manifest, records, summary = make_run(tmp_path)
    evidence.write_run(directory, manifest=manifest, records=records, summary=summary)
    tampered = copy.deepcopy(summary)
    tampered["groups"][0]["n_repeats"] = -1
    (directory / "summary.json").write_text(json.dumps(tampered))
    with pytest.raises(EvidenceError, match="n_repeats"):
        evidence.read_run(directory)
    nan_text = json.dumps(summary).replace('"confidence": 0.95', '"confidence": NaN', 1)
    (directory / "summary.json").write_text(nan_text)
    with pytest.raises(EvidenceError, match="NaN"):
        evidence.read_run(directory)
