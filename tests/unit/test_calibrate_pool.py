"""calibrate --pool: runs of one experiment pool into the decision one long run would make;
runs of different experiments are refused with the difference named."""

import copy
import io
import time

import pytest
from rich.console import Console

from harness import calibrate as bounds
from harness import evidence
from harness.calibrate_pool import PoolError, pool
from harness.commands import validation_block

from tests.unit.test_evidence import make_run
from tests.unit.test_validation_logic import synthetic

PAIRS = 6


def write_calibrate_run(root, records, *, trials, started_at, quick=False, mutate=None):
    directory, manifest, _, _ = make_run(root, suite="calibrate", started_at=started_at)
    manifest["git"] = {"commit": "ab" * 20, "dirty": False}
    manifest["workload"]["repeats"] = trials * PAIRS
    manifest["servers"] = [{"label": label, "kind": "mlx-proof", "revision": None, "argv": [], "status": "ran",
                            "reason": None, "prefix_cache": "on",
                            "health": {"config": {"port": 40000 + i, "max_batch": 8, "planted_slowdown": plant}}}
                           for i, (label, plant) in enumerate([("A", 0.0), ("A2", 0.0), ("planted", 0.07)])]
    block = validation_block(records, pairs_per_trial=PAIRS, slowdown=0.07, threshold=0.025)
    block["verdict"] = bounds.verdict(block, quick=quick)
    summary = {"schema_version": 1, "run_id": manifest["run_id"], "groups": [], "comparisons": [],
               "validation": block}
    if mutate:
        mutate(manifest, summary)
    evidence.write_run(directory, manifest=manifest, records=records, summary=summary)
    time.sleep(0.002)  # distinct run ids
    return directory


def quiet() -> Console:
    return Console(file=io.StringIO())


def test_pooled_trials_decide_as_one_long_run(tmp_path):
    records = synthetic(bounds.MIN_TRIALS + 1, PAIRS, slowdown=0.055, noise=0.02, seed=3)
    cut = 40 * PAIRS
    first = [r for r in records if r["repeat"] < cut]
    second = [dict(r, repeat=r["repeat"] - cut) for r in records if r["repeat"] >= cut]
    parts = [write_calibrate_run(tmp_path, first, trials=40, started_at="2026-01-02T03:04:05+00:00"),
             write_calibrate_run(tmp_path, second, trials=34, started_at="2026-01-02T05:04:05+00:00")]
    for part in parts:  # neither half can prove the bounds alone
        assert evidence.read_run(part).summary["validation"]["verdict"]["status"] != bounds.PROVEN

    code, directory = pool(list(reversed(parts)), evidence_root=tmp_path, console=quiet())
    pooled = evidence.read_run(directory)
    whole = validation_block(records, pairs_per_trial=PAIRS, slowdown=0.07, threshold=0.025)
    v = pooled.summary["validation"]
    assert v["aa_trials"] == 74 and v["aa_flagged"] == whole["aa_flagged"]
    assert v["planted_flagged"] == whole["planted_flagged"] and v["planted_ratio"] == whole["planted_ratio"]
    assert v["pooled_from"] == [evidence.read_run(p).manifest["run_id"] for p in parts]  # oldest first
    assert pooled.manifest["workload"]["repeats"] == 74 * PAIRS
    assert v["verdict"]["status"] == bounds.PROVEN and code == 0


def _edit(path, value):
    def mutate(manifest, summary):
        doc, *keys = path
        target = manifest if doc == "manifest" else summary["validation"]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return mutate


@pytest.mark.parametrize("mutate, quick, needle", [
    (None, True, "--quick"),
    (_edit(("manifest", "git", "dirty"), True), False, "dirty tree"),
    (_edit(("manifest", "host", "cores"), 999), False, "manifest host"),
    (_edit(("manifest", "workload", "cases"), [{"name": "other"}]), False, "manifest workload.cases"),
    (_edit(("summary", "planted_slowdown"), 0.2), False, "planted_slowdown"),
    (_edit(("summary", "metric"), "itl_p50_s"), False, "metric"),
    (_edit(("manifest", "servers", 0, "health", "config", "max_batch"), 4), False, "manifest servers"),
])
def test_runs_of_different_experiments_are_refused(tmp_path, mutate, quick, needle):
    records = synthetic(4, PAIRS, slowdown=0.055, noise=0.02)
    good = write_calibrate_run(tmp_path, records, trials=4, started_at="2026-01-02T03:04:05+00:00")
    bad = write_calibrate_run(tmp_path, copy.deepcopy(records), trials=4, quick=quick, mutate=mutate,
                              started_at="2026-01-02T04:04:05+00:00")
    with pytest.raises(PoolError, match=needle.replace(".", r"\.")):
        pool([good, bad], evidence_root=tmp_path, console=quiet())


def test_one_run_is_not_a_pool(tmp_path):
    one = write_calibrate_run(tmp_path, synthetic(4, PAIRS, slowdown=0.055, noise=0.02), trials=4,
                              started_at="2026-01-02T03:04:05+00:00")
    with pytest.raises(PoolError, match="at least two"):
        pool([one], evidence_root=tmp_path, console=quiet())


def test_profile_flags_from_whichever_server_started_first_do_not_split_an_experiment(tmp_path):
    """Under launch blocks the run's profile.flags may come from the planted server: the pool
    compares each server's own flags instead."""
    records = synthetic(4, PAIRS, slowdown=0.055, noise=0.02)
    first = write_calibrate_run(tmp_path, records, trials=4, started_at="2026-01-02T03:04:05+00:00",
                                mutate=_edit(("manifest", "profile", "flags"), {"planted_slowdown": 0.0}))
    second = write_calibrate_run(tmp_path, records, trials=4, started_at="2026-01-02T04:04:05+00:00",
                                 mutate=_edit(("manifest", "profile", "flags"), {"planted_slowdown": 0.07}))
    code, _ = pool([first, second], evidence_root=tmp_path, console=quiet())
    assert code == 3


def test_a_port_chosen_at_launch_does_not_split_an_experiment(tmp_path):
    records = synthetic(4, PAIRS, slowdown=0.055, noise=0.02)
    first = write_calibrate_run(tmp_path, records, trials=4, started_at="2026-01-02T03:04:05+00:00",
                                mutate=_edit(("manifest", "servers", 0, "health", "config", "port"), 40101))
    second = write_calibrate_run(tmp_path, records, trials=4, started_at="2026-01-02T04:04:05+00:00",
                                 mutate=_edit(("manifest", "servers", 0, "health", "config", "port"), 40202))
    code, directory = pool([first, second], evidence_root=tmp_path, console=quiet())
    assert evidence.read_run(directory).summary["validation"]["aa_trials"] == 8 and code == 3
