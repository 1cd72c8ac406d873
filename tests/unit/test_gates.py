"""Gates on stored evidence: eligibility, run selection, pass/fail/missing, and the decision."""

from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from harness.gates import HOLD, PROMOTE, WARN, decide, evaluate, flag_mismatch, newest_time
from harness.profiles import ProfileError, ProfileSet, load_profiles

SHA = "ab" * 32
NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
DEFAULTS = {"model": "m", "port": 8000, "max_concurrency": 32, "prefix_cache_bytes": 1024, "deterministic": False,
            "dtype": "auto"}


def profile_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(body)
    return path


def document(**profiles) -> dict:
    """What `serving profiles --json` says: explicit flags over the defaults."""
    return {"defaults": DEFAULTS, "instance_flags": ["model", "port"],
            "profiles": {name: {"explicit": flags, "resolved": {**DEFAULTS, **flags}} for name, flags in profiles.items()}}


GOOD = '''
[profile.p]
models = ["m"]
max_evidence_age_days = 30
gates = ['throughput.ratio_vs["mlx-lm"].ci_low >= {low}', 'contracts.c.text == "pass"']
warn = ['throughput.errors == 0']
[profile.p.suites]
throughput = {{ args = ["--cases", "seed"] }}
contracts = {{ args = [] }}
'''


def run(suite: str, summary: dict, *, run_id: str, finished: str = "2026-11-26T10:00:00Z", flags=None,
        sha: str = SHA, harness: str = "0.7.0", model: str = "m", bundle: str | None = None,
        backend: str = "cpu"):
    manifest = {"run_id": run_id, "suite": suite, "started_at": finished, "finished_at": finished,
                "harness_version": harness, "model": {"id": model, "weights_sha256": sha, "source": "catalog"},
                "profile": {"name": "p", "flags": {**DEFAULTS, **(flags or {})}},
                "git": {"commit": "c" * 40, "dirty": False}, "backend": {"backend": backend}}
    if bundle:
        manifest["bundle"] = {"id": bundle, "command": "validate", "profile": "p"}
    return SimpleNamespace(path=Path("/e/m/p") / run_id, manifest=manifest, summary=summary, records=())


def throughput(ci_lows: dict[str, float], *, errors: int = 0) -> dict:
    return {"groups": [{"server": "ours", "case": case, "counts": {"ok": 10 - errors, "error": errors, "incomplete": 0}}
                       for case in ci_lows],
            "comparisons": [{"case": case, "a": "ours", "b": "mlx-lm", "metric": "output_tok_per_s", "ratio": low + 0.05,
                             "ci_low": low, "ci_high": low + 0.1, "p_value": 0.5, "n_pairs": 5}
                            for case, low in ci_lows.items()]}


def contracts(status: str = "pass") -> dict:
    return {"contracts": {"cells": [{"client": "c", "capability": "text", "status": status, "reason": "why"}],
                          "totals": {"pass": 1, "fail": 0, "conditional": 0, "blocked": 0}}}


def profiles(tmp_path, *, low: float = 0.9, flags=None):
    return load_profiles(profile_file(tmp_path, GOOD.format(low=low)), document=document(p=flags or {}))


def decide_on(tmp_path, runs, *, low=0.9, flags=None):
    ps = profiles(tmp_path, low=low, flags=flags)
    return evaluate(ps.get("p"), "m", runs, ps, now=NOW, pins={"m": SHA})


def test_all_gates_pass_promotes_with_the_numbers_and_runs(tmp_path):
    runs = [run("throughput", throughput({"seed-c1": 0.97, "seed-c10": 0.93}), run_id="t1"),
            run("contracts", contracts(), run_id="c1")]
    d = decide_on(tmp_path, runs)
    assert d.decision == PROMOTE and d.published and d.reasons == []
    ratio = d.results[0]
    assert (ratio.status, ratio.value, ratio.run_id) == ("pass", 0.93, "t1")  # the case nearest the bound
    assert "seed-c10" in ratio.where and d.runs() == ["c1", "t1"]


def test_an_impossible_threshold_holds_and_shows_the_failing_number(tmp_path):
    runs = [run("throughput", throughput({"seed-c1": 0.97, "seed-c10": 0.93}), run_id="t1"),
            run("contracts", contracts(), run_id="c1")]
    d = decide_on(tmp_path, runs, low=1.5)
    assert d.decision == HOLD and not d.published
    failed = d.results[0]
    assert (failed.status, failed.value, failed.run_id) == ("fail", 0.93, "t1")
    assert any("0.93" in r and "t1" in r and "ci_low >= 1.5" in r for r in d.reasons)


def test_a_warning_gate_publishes_with_a_warning(tmp_path):
    runs = [run("throughput", throughput({"seed-c1": 0.97}, errors=1), run_id="t1"),
            run("contracts", contracts(), run_id="c1")]
    d = decide_on(tmp_path, runs)
    assert d.decision == WARN and d.published
    assert d.reasons == ["warning: `throughput.errors == 0`: fail: 1 (ours: 1 of 10 requests errored or were "
                         "incomplete; run t1)"]


def test_missing_evidence_holds_and_says_what_is_missing(tmp_path):
    d = decide_on(tmp_path, [run("throughput", throughput({"seed-c1": 0.97}), run_id="t1")])
    assert d.decision == HOLD
    assert [r.status for r in d.results] == ["pass", "missing", "pass"]
    assert d.reasons == ['`contracts.c.text == "pass"`: no evidence: no contracts run on m']


@pytest.mark.parametrize("change, why", [
    ({"sha": "cd" * 32}, "is not the catalog's"),
    ({"harness": "1.0.0"}, "not major version 0"),
    ({"finished": "2026-10-01T00:00:00Z"}, "56 days old (the profile allows 30)"),
    ({"flags": {"prefix_cache_bytes": 0}}, "it ran with prefix_cache_bytes=0; the default is 1024"),
    ({"backend": "cuda"}, "it ran on the cuda backend; the profile counts cpu evidence"),
])
def test_ineligible_runs_do_not_count_and_say_why(tmp_path, change, why):
    runs = [run("throughput", throughput({"seed-c1": 0.97}), run_id="t1", **change),
            run("contracts", contracts(), run_id="c1")]
    d = decide_on(tmp_path, runs)
    assert d.decision == HOLD
    assert d.results[0].status == "missing" and why in d.results[0].reason and "t1" in d.results[0].reason


def test_a_profile_counts_the_backends_it_names(tmp_path):
    body = GOOD.format(low=0.9).replace('models = ["m"]', 'models = ["m"]\nbackends = ["cpu", "cuda"]')
    ps = load_profiles(profile_file(tmp_path, body), document=document(p={}))
    runs = [run("throughput", throughput({"seed-c1": 0.97}), run_id="t1", backend="cuda"),
            run("contracts", contracts(), run_id="c1")]
    assert evaluate(ps.get("p"), "m", runs, ps, now=NOW, pins={"m": SHA}).decision == PROMOTE
    with pytest.raises(ProfileError, match="backends must name some of cpu, cuda, metal, not"):
        load_profiles(profile_file(tmp_path, body.replace('"cuda"]', '"tpu"]')), document=document(p={}))


def test_flags_the_profile_sets_must_be_in_the_run():
    ps_flags = {"deterministic": True, "prefix_cache_bytes": 0}
    ps = ProfileSet({}, DEFAULTS, frozenset({"model", "port"}))
    profile = SimpleNamespace(explicit=ps_flags, resolved={**DEFAULTS, **ps_flags})
    old = {k: v for k, v in {**DEFAULTS, **ps_flags}.items() if k != "deterministic"}
    assert "predates the flag deterministic" in flag_mismatch(old, profile, ps)
    assert flag_mismatch({**DEFAULTS, **ps_flags, "port": 1234, "model": "x"}, profile, ps) is None
    # A flag the profile leaves at its default, missing from an older run: the run had the default.
    assert flag_mismatch({k: v for k, v in {**DEFAULTS, **ps_flags}.items() if k != "dtype"}, profile, ps) is None


def test_the_newest_run_with_every_number_of_the_suite_is_used(tmp_path):
    newest_without_peer = run("throughput", {"groups": throughput({"x": 1})["groups"], "comparisons": []},
                              run_id="t3", finished="2026-11-26T11:00:00Z")
    with_peer = run("throughput", throughput({"seed-c1": 0.96}), run_id="t2", finished="2026-11-26T10:00:00Z")
    older = run("throughput", throughput({"seed-c1": 0.5}), run_id="t1", finished="2026-11-26T09:00:00Z")
    d = decide_on(tmp_path, [newest_without_peer, with_peer, older, run("contracts", contracts(), run_id="c1")])
    assert [r.run_id for r in d.results] == ["t2", "c1", "t2"]


def test_other_models_runs_never_count(tmp_path):
    runs = [run("throughput", throughput({"seed-c1": 0.97}), run_id="t1", model="other"),
            run("contracts", contracts(), run_id="c1")]
    assert decide_on(tmp_path, runs).results[0].reason == "no throughput run on m"


def test_decide():
    r = lambda level, status: SimpleNamespace(level=level, status=status)  # noqa: E731
    assert decide([]) == HOLD
    assert decide([r("required", "pass"), r("warn", "pass")]) == PROMOTE
    assert decide([r("required", "pass"), r("warn", "missing")]) == WARN
    assert decide([r("required", "missing"), r("warn", "pass")]) == HOLD
    assert decide([r("required", "fail")]) == HOLD


def test_newest_time_is_the_reports_clock():
    runs = [run("throughput", {}, run_id="a", finished="2026-11-25T01:00:00Z"),
            run("throughput", {}, run_id="b", finished="2026-11-26T02:00:00+00:00")]
    assert newest_time(runs) == datetime(2026, 11, 26, 2, tzinfo=timezone.utc)


@pytest.mark.parametrize("body, message", [
    ('[profile.p]\nmodels = ["m"]\ngates = ["throughput.errors == 0"]\n', "does not say how to run them"),
    ('[profile.p]\nmodels = ["m"]\ngates = []\n[profile.p.suites]\ntools = { args = [] }\n', "feed no gate"),
    ('[profile.p]\nmodels = []\ngates = []\n', "names no model"),
    ('[profile.p]\nmodels = ["m"]\ngates = ["tools.nonsense >= 1"]\n[profile.p.suites]\ntools = {}\n', "tools knows"),
    ('[profile.p]\nmodels = ["m"]\ngates = ["tools.errors = 1"]\n', "expected one of"),
])
def test_profile_mistakes_are_caught_on_load(tmp_path, body, message):
    with pytest.raises(ProfileError, match=message):
        load_profiles(profile_file(tmp_path, body), document=document(p={}))


def test_a_default_that_became_auto_matches_what_it_runs_as_on_the_runs_backend():
    """decode_step's default became `auto` (the batch step on a CPU, the compiled step on CUDA),
    and compiled_step_context's 8192 became the model's context (None): CPU evidence made with
    batch / 8192 before then still ran the profile's way; evidence with the compiled step did not."""
    ps = ProfileSet({}, DEFAULTS, frozenset({"model", "port"}),
                    auto_equivalents={"cpu": {"decode_step": {"auto": "batch"}}, "cuda": {"decode_step": {"auto": "compiled"}}},
                    inert_unless={"compiled_step_context": ("decode_step", "compiled")})
    now = {**DEFAULTS, "decode_step": "auto", "compiled_step_context": None}
    profile = SimpleNamespace(explicit={}, resolved=now)
    before = {**DEFAULTS, "decode_step": "batch", "compiled_step_context": 8192}
    assert flag_mismatch(before, profile, ps, "cpu") is None
    assert flag_mismatch(before, profile, ps, "cuda") is not None  # there auto is the compiled step
    assert "decode_step='compiled'" in flag_mismatch({**now, "decode_step": "compiled"}, profile, ps, "cpu")
    assert flag_mismatch({**now, "decode_step": "compiled"}, profile, ps, "cuda") is None
    # Under the compiled step the cap counts again.
    assert "compiled_step_context=8192" in flag_mismatch({**before, "decode_step": "compiled"}, profile, ps, "cuda")


@pytest.mark.parametrize("served, eligible", [
    ({"ours-default": "smollm2-135m", "ours-agent": "qwen2.5-coder-1.5b"}, True),
    ({"ours-default": "smollm2-135m", "ours-tools": "qwen2.5-coder-0.5b", "ours-vision": "tiny-vlm"}, True),
    ({"ours-default": "smollm2-135m", "ours-agent": "qwen2.5-coder-0.5b"}, False),  # --serve agent=...
])
def test_a_contracts_run_with_a_kind_served_elsewhere_does_not_count(tmp_path, served, eligible):
    ran = run("contracts", contracts(), run_id="c1")
    ran.manifest["servers"] = [{"label": label, "health": {"model": {"id": model}}} for label, model in served.items()]
    d = decide_on(tmp_path, [run("throughput", throughput({"seed-c1": 0.97}), run_id="t1"), ran])
    assert d.decision == (PROMOTE if eligible else HOLD)
    if not eligible:
        assert "its agent cases ran on qwen2.5-coder-0.5b, not the suite's qwen2.5-coder-1.5b" in d.reasons[0]
