"""What the serve command says about a profile: resolved flags, published or held per model, and
how to point a client program at us.

"Published" is never decided here: the harness computes it from committed evidence and writes
reports/published.json (`nox -s publish`); the server only reads that file. Serving a profile that
is not published for the model prints a warning naming the failed or missing evidence, and
serves anyway.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path
from typing import Any

from .backend import auto_equivalents
from .config import INERT_UNLESS, PROFILES_FILE, ServerConfig, build_config, load_profiles, profile_flags

PUBLISHED_FILE = Path(__file__).resolve().parent.parent / "reports" / "published.json"
PLACEHOLDERS = ("base_url", "api_key", "model", "output_cap")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _as_dict(config: ServerConfig) -> dict[str, Any]:
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _instance_flags(path: Path) -> list[str]:
    import tomllib

    with path.open("rb") as fh:
        return list(tomllib.load(fh).get("instance_flags", []))


def profiles_document(path: Path = PROFILES_FILE) -> dict[str, Any]:
    """Every profile with its own flags (its serving profile's included) and fully resolved, for
    the harness to match evidence against (`mlx-proof profiles --json`)."""
    out = {}
    for name, entry in load_profiles(path).items():
        out[name] = {"kind": entry.get("kind", "serving"), "description": entry.get("description", ""),
                     "serving": entry.get("serving"), "auth": entry.get("auth"),
                     "models": list(entry.get("models", [])),
                     "explicit": {k: _plain(v) for k, v in profile_flags(name, path=path).items()},
                     "resolved": _as_dict(build_config({"profile": name}, profiles_path=path))}
    return {"defaults": _as_dict(ServerConfig()), "instance_flags": _instance_flags(path), "profiles": out,
            "auto_equivalents": auto_equivalents(),
            "inert_unless": {k: list(v) for k, v in INERT_UNLESS.items()}}


def read_published(path: Path = PUBLISHED_FILE) -> dict | None:
    """The matrix `nox -s publish` wrote (None when there is none, e.g. an installed copy)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cell(published: dict | None, profile: str, model: str) -> dict | None:
    for cell in (published or {}).get("cells", []):
        if cell["profile"] == profile and cell["model"] == model:
            return cell
    return None


def status_line(cell: dict | None) -> str:
    if cell is None:
        return "no decision (not a model this profile targets, or no matrix)"
    label = "published" if cell["published"] else "held"
    return f"{label} ({cell['decision']})"


def list_profiles(*, path: Path = PROFILES_FILE, published_path: Path = PUBLISHED_FILE, out=print) -> int:
    """`mlx-proof serve --list-profiles`: each profile, its resolved flags, and per model whether
    committed evidence publishes it."""
    published = read_published(published_path)
    doc = profiles_document(path)
    defaults = doc["defaults"]
    if published is None:
        out(f"(no published matrix at {published_path}: run `nox -s publish` in a checkout)")
    else:
        out(f"published matrix: evidence as of {published['as_of']} (reports/published.md)")
    for name, p in doc["profiles"].items():
        maps = f" -> {p['serving']}" if p["serving"] else ""
        out(f"\n{name} [{p['kind']}{maps}]: {p['description']}")
        out("  flags: " + (", ".join(f"{k}={v}" for k, v in sorted(p["explicit"].items())) or "the defaults"))
        changed = {k: v for k, v in p["resolved"].items()
                   if v != defaults.get(k) and k not in p["explicit"] and k != "profile"}
        if changed:
            out("  also: " + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
        models = sorted({*p["models"], *(c["model"] for c in (published or {}).get("cells", [])
                                         if c["profile"] == name)})
        for model in models:
            out(f"  {model}: {status_line(_cell(published, name, model))}")
    return 0


def publication_notice(config: ServerConfig, *, published_path: Path = PUBLISHED_FILE) -> tuple[str, str] | None:
    """(level, message) about the profile on this model, or None when it is published cleanly."""
    published = read_published(published_path)
    where = f"`nox -s validate -- --profile {config.profile} --model {config.model}`"
    if published is None:
        return ("warning", f"no published matrix ({published_path}): cannot tell whether profile "
                           f"{config.profile!r} is published for {config.model!r}")
    cell = _cell(published, config.profile, config.model)
    if cell is None:
        return ("warning", f"profile {config.profile!r} is not published for model {config.model!r}: no evidence "
                           f"decision exists for this pair (published matrix as of {published['as_of']}); {where} "
                           "would make one")
    reasons = "; ".join(cell["reasons"]) or "no reason recorded"
    if not cell["published"]:
        return ("warning", f"profile {config.profile!r} is HELD for model {config.model!r}: {reasons} "
                           f"(reports/published.md; {where} re-runs its suites)")
    if cell["decision"] != "promote":
        return ("note", f"profile {config.profile!r} is published for {config.model!r} with a warning: {reasons}")
    return None


def _client(profile: str, path: Path) -> dict:
    entry = load_profiles(path).get(profile, {})
    return entry if entry.get("kind") == "client" else {}


def with_profile_auth(config: ServerConfig, *, path: Path = PROFILES_FILE) -> tuple[ServerConfig, bool]:
    """A client profile with auth = "api-key" never serves without a key: one is made when none was
    given (and shown once, in the launch hint). Returns the config and whether a key was made."""
    if _client(config.profile, path).get("auth") != "api-key" or config.api_key:
        return config, False
    return dataclasses.replace(config, api_key="sk-local-" + secrets.token_urlsafe(18)), True


def _fill(text: str, values: dict[str, str]) -> str:
    for key in PLACEHOLDERS:  # only ours: client configs have braces of their own ({env:VAR})
        text = text.replace("{" + key + "}", values[key])
    return text


def launch_hint(config: ServerConfig, *, path: Path = PROFILES_FILE) -> list[str]:
    """How to point the profile's client program at this server (empty for a serving profile)."""
    entry = _client(config.profile, path)
    if not entry:
        return []
    client = entry.get("client", {})
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    values = {"base_url": f"http://{host}:{config.port}", "api_key": config.api_key or "unused",
              "model": config.public_model_id or Path(config.model).name,
              "output_cap": str(client.get("output_cap", config.max_tokens_ceiling))}
    env = " ".join(f"{k}={_fill(str(v), values)}" for k, v in client.get("env", {}).items())
    lines = [f"client profile {config.profile!r} ({entry.get('description', '')}); point the client at us with:"]
    if env or client.get("program"):
        lines.append(f"  {env} {_fill(client.get('program', ''), values)}".rstrip())
    if client.get("notes"):
        lines.append(f"  {_fill(client['notes'], values)}")
    return lines
