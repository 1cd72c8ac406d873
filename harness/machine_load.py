"""How busy the machine was outside the run, sampled from /proc around each repeat.

A paired ratio is only as good as the machine was quiet while both sides ran. A calibrate part
run beside unit tests on the 2-core machine (a8a647) caught one planted 6% slowdown in three:
the load was ours, but nothing in the evidence said so. So each repeat records two fractions of
the machine's CPU capacity (all cores, from /proc/stat's jiffies):

- foreign_cpu: busy time spent by processes outside the run. The run is this harness process
  (its client threads included) and every process descended from it, which is every server it
  launched; whatever else ran is foreign.
- steal_cpu: time the hypervisor gave another guest, on a virtual machine.

Either is None where /proc is missing (macOS), so the evidence says "not measured" rather than 0.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

PROC = Path("/proc")
# The reports call a repeat disturbed above this share (a calibrate part that missed plants beside
# unit tests ran with pairs spread 3-15 times wider than its quiet trials).
DISTURBED_LOAD = 0.10


def _cpu_jiffies(proc: Path) -> tuple[int, int, int] | None:
    """(busy, steal, total) jiffies over all CPUs from /proc/stat's first line."""
    try:
        first = (proc / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if first[0] != "cpu" or len(first) < 9:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
    # inside user and nice, so only the first eight add up to the total.
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return user + nice + system + irq + softirq, steal, total


def _process_table(proc: Path) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, utime + stime in jiffies, all threads) for every readable process."""
    table = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone since the listing
            continue
        # comm is parenthesised and may hold spaces or parentheses: split after the last ')'.
        fields = text[text.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _run_cpu(table: dict[int, tuple[int, int]], root: int) -> dict[int, int]:
    """CPU jiffies of root and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in out:
            out[pid] = table[pid][1]
            todo += children.get(pid, [])
    return out


class MachineLoad:
    """Context manager around one repeat: `.foreign_cpu` and `.steal_cpu` after exit."""

    def __init__(self, *, root: int | None = None, proc: Path = PROC) -> None:
        self.root = os.getpid() if root is None else root
        self.proc = proc
        self.foreign_cpu: float | None = None
        self.steal_cpu: float | None = None

    def _snapshot(self):
        cpu = _cpu_jiffies(self.proc)
        if cpu is None:
            return None
        try:
            return cpu, _run_cpu(_process_table(self.proc), self.root)
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> "MachineLoad":
        self._before = self._snapshot()
        return self

    def __exit__(self, *exc) -> None:
        after = self._snapshot()
        if self._before is None or after is None:
            return
        (busy0, steal0, total0), ours0 = self._before
        (busy1, steal1, total1), ours1 = after
        elapsed = total1 - total0
        if elapsed <= 0:
            return
        # A process of the run that ended during the repeat takes its CPU along (not counted as
        # ours, so it shows as foreign); one that started during it counts from zero.
        ours = sum(cpu - ours0.get(pid, 0) for pid, cpu in ours1.items())
        self.foreign_cpu = min(max(busy1 - busy0 - ours, 0) / elapsed, 1.0)
        self.steal_cpu = min(max(steal1 - steal0, 0) / elapsed, 1.0)


def describe(records: list[dict]) -> str | None:
    """One sentence over a run's repeats for the report; None for runs recorded before the
    fields existed, or where nothing was measured."""
    runs = [r for r in records if r.get("type") == "run"]
    foreign = sorted(r["foreign_cpu"] for r in runs if r.get("foreign_cpu") is not None)
    if not foreign:
        return None
    steal = [r["steal_cpu"] for r in runs if r.get("steal_cpu") is not None]
    return (f"Load outside the run (processes not launched by the harness), as a share of the machine's CPU: "
            f"median {100 * statistics.median(foreign):.1f}%, at most {100 * foreign[-1]:.1f}% over {len(foreign)} repeats"
            f" ({disturbed(foreign)} above {DISTURBED_LOAD:.0%})"
            + (f"; hypervisor steal at most {100 * max(steal):.1f}%" if steal else "") + ".")


def disturbed(loads: list[float]) -> int:
    """How many of these foreign_cpu shares the reports call disturbed."""
    return sum(x > DISTURBED_LOAD for x in loads)


def trial_loads(block: dict) -> str | None:
    """A calibrate block's per-trial loads in one phrase (console and report alike); None before
    harness 0.9.0 or where nothing was measured."""
    loads = [x for x in block.get("trial_foreign_cpu_max") or [] if x is not None]
    if not loads:
        return None
    return (f"at most {100 * max(loads):.1f}% of the CPU in any repeat; {disturbed(loads)} of {len(loads)} "
            f"trials above {DISTURBED_LOAD:.0%}")
