"""Evaluate a profile's gates on stored evidence, and decide: promote, promote-with-warning or hold.

Which runs count for a profile on a model (eligibility):
- a run of the gate's suite, on that model id, whose weights sha256 is the one the catalog pins;
- on one of the profile's backends (profiles.toml `backends`, default cpu);
- written by a harness of the same major version;
- at most the profile's max_evidence_age_days old, counted back from `now`;
- served with the profile's flags: every flag the profile sets has its value in the run's
  resolved config (a run that predates a flag the profile sets does not count), and every other
  flag, instance flags aside, is at its default (a flag the run predates is taken at its default).
The folder a run is filed under does not matter: two profiles with the same flags share evidence.

Per suite, the newest eligible run in which every gate of that suite finds its numbers is used;
failing that, each gate takes the newest eligible run that has its numbers. Every result names
its run, so a decision can always be traced to raw records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .evidence import HARNESS_VERSION
from .gate_expr import Gate
from .gate_paths import Found, resolve
from .profiles import Profile, ProfileSet

PROMOTE, WARN, HOLD = "promote", "promote-with-warning", "hold"
EXIT_CODES = {PROMOTE: 0, HOLD: 1, WARN: 3}
PASS, FAIL, MISSING = "pass", "fail", "missing"


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    level: str  # "required" or "warn"
    status: str  # pass | fail | missing
    value: Any = None
    where: str = ""
    run_id: str | None = None
    run_path: str | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.status == MISSING:
            return f"`{self.gate.text}`: no evidence: {self.reason}"
        return f"`{self.gate.text}`: {self.status}: {_shown(self.value)} ({self.where}; run {self.run_id})"


@dataclass(frozen=True)
class Decision:
    profile: str
    model: str
    decision: str
    results: tuple[GateResult, ...]
    now: str

    @property
    def published(self) -> bool:
        return self.decision in (PROMOTE, WARN)

    @property
    def reasons(self) -> list[str]:
        """Why it is not a clean promote: every gate that failed or has no evidence."""
        if not self.results:
            return ["the profile has no gates: nothing proves it"]
        out, missing = [], {}
        for r in self.results:
            if r.status == MISSING:  # one line per cause, naming every gate it leaves without evidence
                missing.setdefault((r.level, r.reason), []).append(f"`{r.gate.text}`")
            elif r.status == FAIL:
                out.append(("warning: " if r.level == "warn" else "") + r.describe())
        out += [("warning: " if level == "warn" else "") + f"{', '.join(gates)}: no evidence: {reason}"
                for (level, reason), gates in missing.items()]
        return out

    def runs(self) -> list[str]:
        return sorted({r.run_id for r in self.results if r.run_id})


def _shown(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else repr(x) if isinstance(x, str) else str(x)


def when(timestamp: str) -> datetime:
    return datetime.fromisoformat(re.sub(r"Z$", "+00:00", timestamp))


def major(version: str) -> str:
    return version.split(".")[0]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def flag_mismatch(flags: dict, profile: Profile, profiles: ProfileSet, backend: str | None = None) -> str | None:
    """Why a run's resolved config is not this profile's (None when it is). An `auto` value
    matches what it runs as on the run's backend, and a flag inert under both configs is skipped."""
    ran, wants = profiles.effective(flags, backend), profiles.effective(profile.resolved, backend)
    for key, wanted in sorted(profile.resolved.items()):
        if key in profiles.instance_flags:
            continue
        if key not in flags:
            if key in profile.explicit:
                return f"it predates the flag {key}, which the profile sets to {wanted!r}"
            continue  # a flag added since: the run behaved as its default
        when = profiles.inert_unless.get(key)
        if when and ran.get(when[0]) != when[1] and wants.get(when[0]) != when[1]:
            continue
        if _plain(ran[key]) != _plain(wants[key]):
            source = "the profile sets" if key in profile.explicit else "the default is"
            return f"it ran with {key}={flags[key]!r}; {source} {wanted!r}"
    return None


def ineligible(run, profile: Profile, profiles: ProfileSet, *, pins: dict[str, str], now: datetime) -> str | None:
    man = run.manifest
    pin = pins.get(man["model"]["id"])
    if pin and man["model"]["weights_sha256"] != pin:
        return f"its weights sha256 {man['model']['weights_sha256'][:12]} is not the catalog's {pin[:12]}"
    backend = (man.get("backend") or {}).get("backend")
    if backend not in profile.backends:
        return f"it ran on the {backend} backend; the profile counts {', '.join(profile.backends)} evidence"
    if major(man["harness_version"]) != major(HARNESS_VERSION):
        return f"harness {man['harness_version']}, not major version {major(HARNESS_VERSION)}"
    age = (now - when(man["finished_at"])).total_seconds() / 86400
    if profile.max_age_days is not None and age > profile.max_age_days:
        return f"{age:.0f} days old (the profile allows {profile.max_age_days:g})"
    if man.get("suite") == "contracts":
        from .contracts_suite import served_elsewhere

        if (why := served_elsewhere(man)) is not None:
            return why
    return flag_mismatch(man["profile"]["flags"], profile, profiles, backend)


def _worst(gate: Gate, found: list[Found]) -> Found:
    """The number furthest on the wrong side of (or nearest to) the bound."""
    numeric = [f for f in found if isinstance(f.value, (int, float)) and not isinstance(f.value, bool)]
    if numeric and gate.op in (">=", ">"):
        return min(numeric, key=lambda f: f.value)
    if numeric and gate.op in ("<=", "<"):
        return max(numeric, key=lambda f: f.value)
    return found[0]


def _verdict(gate: Gate, found: list[Found]) -> tuple[str, Found]:
    """pass when the gate holds for every number found (one per case, batch size or mode)."""
    broken = [f for f in found if not gate.holds(f.value)]
    return (FAIL, _worst(gate, broken)) if broken else (PASS, _worst(gate, found))


def _result(gate: Gate, level: str, run, found: list[Found]) -> GateResult:
    status, shown = _verdict(gate, found)
    return GateResult(gate, level, status, shown.value, shown.where, run.manifest["run_id"], str(run.path))


def _missing_reason(suite: str, model: str, candidates: list, rejected: list[tuple[Any, str]]) -> str:
    if not candidates and not rejected:
        return f"no {suite} run on {model}"
    if not candidates:
        shown = "; ".join(f"{run.manifest['run_id']}: {why}" for run, why in rejected[:2])
        more = f" (and {len(rejected) - 2} more)" if len(rejected) > 2 else ""
        return f"no {suite} run on {model} ran this profile's way: {shown}{more}"
    return f"no eligible {suite} run has these numbers (newest eligible: {candidates[0].manifest['run_id']})"


def evaluate(profile: Profile, model: str, runs: Iterable, profiles: ProfileSet, *, now: datetime,
             pins: dict[str, str]) -> Decision:
    """The decision for `profile` on `model` from `runs` (newest first, as evidence.iter_runs gives)."""
    runs = list(runs)
    leveled = [(g, "required") for g in profile.gates] + [(g, "warn") for g in profile.warn]
    results: dict[int, GateResult] = {}
    for suite in profile.needed_suites():
        mine = [(i, g, level) for i, (g, level) in enumerate(leveled) if g.suite == suite]
        of_suite = [r for r in runs if r.manifest["suite"] == suite and r.manifest["model"]["id"] == model]
        rejected = [(r, why) for r in of_suite
                    if (why := ineligible(r, profile, profiles, pins=pins, now=now)) is not None]
        eligible = [r for r in of_suite if all(r is not x for x, _ in rejected)]
        found = {id(r): {i: resolve(g.path, r.summary) for i, g, _ in mine} for r in eligible}
        whole = next((r for r in eligible if all(found[id(r)][i] for i, _, _ in mine)), None)
        for i, gate, level in mine:
            run = whole or next((r for r in eligible if found[id(r)][i]), None)
            if run is None:
                results[i] = GateResult(gate, level, MISSING,
                                        reason=_missing_reason(suite, model, eligible, rejected))
            else:
                results[i] = _result(gate, level, run, found[id(run)][i])
    ordered = tuple(results[i] for i in range(len(leveled)))
    return Decision(profile.name, model, decide(ordered), ordered, now.isoformat(timespec="seconds"))


def decide(results: Iterable[GateResult]) -> str:
    results = list(results)
    if not results or any(r.status != PASS for r in results if r.level == "required"):
        return HOLD
    if any(r.status != PASS for r in results):
        return WARN
    return PROMOTE


def newest_time(runs: Iterable) -> datetime:
    """The `now` a report uses: the newest evidence's end, so the same evidence always gives the
    same decisions (ages count back from it, not from the day the report is rendered)."""
    times = [when(r.manifest["finished_at"]) for r in runs]
    return max(times) if times else datetime(1970, 1, 1, tzinfo=timezone.utc)
