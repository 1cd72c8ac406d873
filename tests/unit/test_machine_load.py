"""The machine-load probe: CPU outside the run and hypervisor steal, from a fake /proc, and the
report's sentence over a run's repeats."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import machine_load
from harness.machine_load import MachineLoad, describe, trial_loads


def write_proc(proc: Path, *, cpu: tuple[int, ...], processes: dict[int, tuple[int, int, str]]) -> None:
    """cpu: user nice system idle iowait irq softirq steal; processes: pid -> (ppid, jiffies, comm)."""
    proc.mkdir(exist_ok=True)
    (proc / "stat").write_text("cpu  " + " ".join(map(str, cpu)) + " 0 0\ncpu0 1 2 3\n")
    for old in proc.iterdir():
        if old.name.isdigit() and int(old.name) not in processes:
            (old / "stat").unlink()
            old.rmdir()
    for pid, (ppid, jiffies, comm) in processes.items():
        (proc / str(pid)).mkdir(exist_ok=True)
        # field 3 on: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        utime, stime = jiffies // 2, jiffies - jiffies // 2
        (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0\n")


class SteppedProc:
    """A fake /proc that moves from one state to the next at each snapshot."""

    def __init__(self, root: Path, states: list[dict]):
        self.root, self.states = root, states

    def __call__(self, probe: MachineLoad) -> None:
        write_proc(self.root, **self.states.pop(0))


def run_probe(tmp_path, monkeypatch, before: dict, after: dict, root: int = 100) -> MachineLoad:
    proc = tmp_path / "proc"
    stepper = SteppedProc(proc, [before, after])
    real = MachineLoad._snapshot

    def snapshot(self):
        stepper(self)
        return real(self)

    monkeypatch.setattr(MachineLoad, "_snapshot", snapshot)
    with MachineLoad(root=root, proc=proc) as probe:
        pass
    return probe


def test_only_processes_outside_the_run_count_as_foreign(tmp_path, monkeypatch):
    # 2 cores x 100 jiffies = 200 jiffies of capacity; 150 busy, of which the run (harness 100,
    # its server 101 and the server's child 102) used 110; an outside process (200) used 40.
    before = {"cpu": (1000, 0, 500, 5000, 0, 0, 0, 0),
              "processes": {100: (1, 10, "python"), 101: (100, 20, "python -m serving"), 102: (101, 0, "worker"),
                            200: (1, 5, "pytest")}}
    after = {"cpu": (1120, 0, 530, 5050, 0, 0, 0, 0),
             "processes": {100: (1, 40, "python"), 101: (100, 90, "python -m serving"), 102: (101, 10, "worker"),
                           200: (1, 45, "pytest")}}
    probe = run_probe(tmp_path, monkeypatch, before, after)
    assert probe.foreign_cpu == pytest.approx(40 / 200)
    assert probe.steal_cpu == 0


def test_steal_is_its_own_share_and_not_foreign(tmp_path, monkeypatch):
    before = {"cpu": (0, 0, 0, 0, 0, 0, 0, 0), "processes": {100: (1, 0, "python")}}
    after = {"cpu": (50, 0, 0, 100, 0, 0, 0, 50), "processes": {100: (1, 50, "python")}}
    probe = run_probe(tmp_path, monkeypatch, before, after)
    assert probe.foreign_cpu == 0
    assert probe.steal_cpu == pytest.approx(50 / 200)


def test_a_server_started_during_the_repeat_counts_as_the_runs(tmp_path, monkeypatch):
    before = {"cpu": (0, 0, 0, 0, 0, 0, 0, 0), "processes": {100: (1, 0, "python")}}
    after = {"cpu": (60, 0, 0, 140, 0, 0, 0, 0), "processes": {100: (1, 10, "python"), 150: (100, 50, "srv (x)")}}
    probe = run_probe(tmp_path, monkeypatch, before, after)
    assert probe.foreign_cpu == 0  # a comm with spaces and parentheses still parses


def test_without_proc_nothing_is_claimed(tmp_path):
    with MachineLoad(proc=tmp_path / "absent") as probe:
        pass
    assert probe.foreign_cpu is None and probe.steal_cpu is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_on_the_real_proc_the_harness_finds_itself_and_its_cpu():
    before = machine_load._run_cpu(machine_load._process_table(machine_load.PROC), os.getpid())
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pass
    after = machine_load._run_cpu(machine_load._process_table(machine_load.PROC), os.getpid())
    assert after[os.getpid()] - before[os.getpid()] >= 5  # jiffies (1/100 s) of that busy loop
    with MachineLoad() as probe:
        time.sleep(0.05)
    assert probe.foreign_cpu is not None and 0 <= probe.foreign_cpu <= 1 and 0 <= probe.steal_cpu <= 1


def test_describe_gives_median_max_and_steal():
    records = [{"type": "run", "foreign_cpu": x, "steal_cpu": s} for x, s in ((0.01, 0.0), (0.03, 0.02), (0.5, 0.0))]
    line = describe(records + [{"type": "request"}])
    assert "median 3.0%" in line and "at most 50.0% over 3 repeats (1 above 10%)" in line
    assert "steal at most 2.0%" in line
    assert describe([{"type": "run", "wall_s": 1.0, "peak_rss_mb": None}]) is None  # before harness 0.9.0



def test_trial_loads_sums_up_a_calibrate_block():
    assert trial_loads({"trial_foreign_cpu_max": [0.02, None, 0.25]}) == \
        "at most 25.0% of the CPU in any repeat; 1 of 2 trials above 10%"
    assert trial_loads({"aa_trials": 3}) is None  # a block recorded before harness 0.9.0
