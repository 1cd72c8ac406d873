"""Serving and client profiles as the harness reads them: gates, the suites that feed them, and
the flags evidence must have run with.

The gates and suites come from serving/profiles.toml (data). The resolved flags, the server's
defaults and the catalog's sha256 pins come from our CLI, as a process (`serving profiles --json`,
`serving models --json`): the harness never imports the server.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .gate_expr import Gate, parse_gate
from .gate_paths import SUITES, check_shape
from .servers import REPO_ROOT

PROFILES_FILE = REPO_ROOT / "serving" / "profiles.toml"
KINDS = ("serving", "client")


class ProfileError(ValueError):
    """A profile the harness cannot use; the message says which and why."""


BACKENDS = ("cpu", "cuda", "metal")


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    description: str
    models: tuple[str, ...]
    gates: tuple[Gate, ...]
    warn: tuple[Gate, ...]
    suites: dict[str, tuple[str, ...]]  # suite -> the arguments validate adds for it
    max_age_days: float | None
    explicit: dict[str, Any]  # the flags the profile (and its serving profile) sets
    resolved: dict[str, Any]  # every flag, defaults included
    serving: str | None = None  # a client profile's serving profile
    # the backends (cpu, cuda, metal) whose evidence counts: a run on another backend measured
    # another server (its defaults, kernels and peers' speed differ), so it decides nothing here
    backends: tuple[str, ...] = ("cpu",)
    client: dict = field(default_factory=dict)

    def needed_suites(self) -> list[str]:
        """The suites the gates read, in the order the gates name them."""
        return list(dict.fromkeys(g.suite for g in (*self.gates, *self.warn)))


@dataclass(frozen=True)
class ProfileSet:
    profiles: dict[str, Profile]
    defaults: dict[str, Any]
    instance_flags: frozenset[str]
    # backend -> flag -> {"auto": the value it runs as}; flag -> (flag, value) it matters only under
    auto_equivalents: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    inert_unless: dict[str, tuple[str, Any]] = field(default_factory=dict)

    def effective(self, flags: dict[str, Any], backend: str | None) -> dict[str, Any]:
        """`flags` with each `auto` value as the backend runs it."""
        autos = self.auto_equivalents.get(backend or "", {})
        return {k: autos.get(k, {}).get(v, v) if isinstance(v, str) else v for k, v in flags.items()}

    def get(self, name: str) -> Profile:
        if name not in self.profiles:
            raise ProfileError(f"unknown profile {name!r}; known: {', '.join(self.profiles)}")
        return self.profiles[name]


def _serving_json(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, check=False)
    if done.returncode != 0:
        raise ProfileError(f"`serving {' '.join(args)}` failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout)


def resolved_document(path: Path = PROFILES_FILE) -> dict:
    """`serving profiles --json`: every profile's explicit and resolved flags, and the defaults."""
    return _serving_json("profiles", "--json", "--file", str(path))


@functools.lru_cache(maxsize=1)
def catalog_pins() -> dict[str, str]:
    """Catalog id -> the sha256 the catalog pins (`serving models --json`; nothing is fetched)."""
    return {model_id: entry["sha256"] for model_id, entry in _serving_json("models", "--json").items()}


def _gates(name: str, texts: list[str]) -> tuple[Gate, ...]:
    gates = []
    for text in texts:
        try:
            gate = parse_gate(text)
            check_shape(gate.path)
        except ValueError as exc:
            raise ProfileError(f"profile {name}: {exc}") from None
        gates.append(gate)
    return tuple(gates)


def _profile(name: str, entry: dict, resolved: dict) -> Profile:
    kind = entry.get("kind", "serving")
    if kind not in KINDS:
        raise ProfileError(f"profile {name}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    gates, warn = _gates(name, entry.get("gates", [])), _gates(name, entry.get("warn", []))
    suites = {suite: tuple(str(a) for a in spec.get("args", [])) for suite, spec in entry.get("suites", {}).items()}
    read = {g.suite for g in (*gates, *warn)}
    if unknown := sorted(set(suites) - set(SUITES)):
        raise ProfileError(f"profile {name}: unknown suites {unknown}; known: {', '.join(SUITES)}")
    if missing := sorted(read - set(suites)):
        raise ProfileError(f"profile {name}: gates read {missing} but [profile.{name}.suites] does not say how "
                           "to run them")
    if unused := sorted(set(suites) - read):
        raise ProfileError(f"profile {name}: suites {unused} feed no gate (validate runs only what gates read)")
    backends = tuple(entry.get("backends", ["cpu"]))
    if not backends or (unknown := sorted(set(backends) - set(BACKENDS))):
        raise ProfileError(f"profile {name}: backends must name some of {', '.join(BACKENDS)}"
                           + (f", not {unknown}" if backends else ""))
    models = tuple(entry.get("models", []))
    if not models:
        raise ProfileError(f"profile {name}: `models` names no model to validate it on")
    return Profile(name=name, kind=kind, description=entry.get("description", ""), models=models, gates=gates,
                   warn=warn, suites=suites, max_age_days=entry.get("max_evidence_age_days"),
                   explicit=resolved["explicit"], resolved=resolved["resolved"], serving=entry.get("serving"),
                   client=entry.get("client", {}), backends=backends)


def load_profiles(path: Path = PROFILES_FILE, *, document: dict | None = None) -> ProfileSet:
    """Every profile of `path`, its gates parsed and checked; `document` stands in for
    `serving profiles --json` (tests)."""
    with Path(path).open("rb") as fh:
        raw = tomllib.load(fh)
    document = document if document is not None else resolved_document(path)
    profiles = {name: _profile(name, entry, document["profiles"][name])
                for name, entry in raw.get("profile", {}).items()}
    return ProfileSet(profiles, document["defaults"], frozenset(document["instance_flags"]),
                      document.get("auto_equivalents", {}),
                      {k: tuple(v) for k, v in document.get("inert_unless", {}).items()})
