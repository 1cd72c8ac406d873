"""Client files (clients/*.toml) -> Cases. One file per client; each `[[case]]` checks one
capability with one driver action, and every key besides capability, action and model is
passed to the driver as the case's args. Adding a case is editing a file, never code.

    client = "openai-python"          # the matrix row
    title = "openai Python SDK"       # shown in the report
    driver = "openai_sdk"             # drivers/openai_sdk.py
    tier = "sdk"                      # sdk: PyPI clients, CI runs them; cli: npm programs; browser
    configured = "OpenAI(base_url=..., api_key=...)"   # how the client was pointed at us (README)

    [[case]]
    capability = "text"               # the matrix column: one of CAPABILITIES
    action = "chat"                   # the driver's action
    model = "default"                 # default | tools (the tool model) | agent (the agent-turn model)
                                      # | vision (a tiny built VLM)
    prompt = "..."                    # args for the driver
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from .driver import Case

CLIENTS_DIR = Path(__file__).parent / "clients"
CAPABILITIES = ("text", "streaming", "system", "multi-turn", "tools", "auth", "model-id", "usage", "stop",
                "structured", "images", "embeddings", "transcription")
TIERS = ("sdk", "cli", "browser")
# The model kinds a case may ask for, and the model that serves each (session.served_models).
# "agent" serves the agent CLIs' tool turns: their ~3-5k-token agent prompts (instructions plus
# tool schemas) are past what the 0.5B tool model follows. Run here, it re-calls the tool after its
# result (Claude Code: 12 identical Reads) or copies a parameter's description into its arguments
# (Codex: `justification`, refused by Codex each time); sampling did not help where tried (Claude
# Code's turn, 10 seeds). The 1.5B answers both (README, "Client contracts").
MODELS = {"default": "smollm2-135m", "tools": "qwen2.5-coder-0.5b", "agent": "qwen2.5-coder-1.5b",
          "vision": "tiny-vlm (built)"}
_CASE_KEYS = {"capability", "action", "model"}


@dataclass(frozen=True)
class Client:
    id: str
    title: str
    driver: str
    tier: str
    configured: str
    cases: tuple[Case, ...]
    path: Path

    def describe(self) -> dict:
        return {"client": self.id, "title": self.title, "driver": self.driver, "tier": self.tier,
                "configured": self.configured, "file": self.path.name,
                "cases": [{"capability": c.capability, "action": c.action, "model": c.model} for c in self.cases]}


class CaseFileError(ValueError):
    pass


def _case(client: str, raw: dict, where: str) -> Case:
    missing = {"capability", "action"} - raw.keys()
    if missing:
        raise CaseFileError(f"{where}: missing {', '.join(sorted(missing))}")
    if raw["capability"] not in CAPABILITIES:
        raise CaseFileError(f"{where}: unknown capability {raw['capability']!r} (known: {', '.join(CAPABILITIES)})")
    model = raw.get("model", "default")
    if model not in MODELS:
        raise CaseFileError(f"{where}: model must be one of {', '.join(MODELS)}, not {model!r}")
    args = {k: v for k, v in raw.items() if k not in _CASE_KEYS}
    return Case(client, raw["capability"], str(raw["action"]), model, args)


def load_client(path: Path) -> Client:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CaseFileError(f"{path.name}: {exc}") from None
    for key in ("client", "title", "driver", "tier", "configured"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise CaseFileError(f"{path.name}: {key!r} must be a non-empty string")
    if raw["tier"] not in TIERS:
        raise CaseFileError(f"{path.name}: tier must be one of {', '.join(TIERS)}, not {raw['tier']!r}")
    cases = raw.get("case", [])
    if not cases:
        raise CaseFileError(f"{path.name}: no [[case]]")
    built = tuple(_case(raw["client"], c, f"{path.name} case {i + 1}") for i, c in enumerate(cases))
    keys = [c.key for c in built]
    if len(set(keys)) != len(keys):
        raise CaseFileError(f"{path.name}: two cases share a capability and action")
    return Client(raw["client"], raw["title"], raw["driver"], raw["tier"], raw["configured"], built, path)


def load_clients(directory: Path = CLIENTS_DIR) -> list[Client]:
    clients = [load_client(p) for p in sorted(directory.glob("*.toml"))]
    ids = [c.id for c in clients]
    if len(set(ids)) != len(ids):
        raise CaseFileError("two client files share a client id")
    return clients


def select(clients: list[Client], *, names: list[str] | None = None, tiers: list[str] | None = None,
           capabilities: list[str] | None = None, models: list[str] | None = None) -> list[Client]:
    """Clients by id (unknown ids are an error naming the known ones), tier, and cases by
    capability and served model."""
    known = {c.id for c in clients}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise CaseFileError(f"unknown client {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    bad = sorted(set(capabilities or ()) - set(CAPABILITIES))
    if bad:
        raise CaseFileError(f"unknown capability {', '.join(bad)} (known: {', '.join(CAPABILITIES)})")
    bad = sorted(set(models or ()) - set(MODELS))
    if bad:
        raise CaseFileError(f"unknown model kind {', '.join(bad)} (known: {', '.join(MODELS)})")
    out = []
    for c in clients:
        if (names and c.id not in names) or (tiers and c.tier not in tiers):
            continue
        cases = tuple(k for k in c.cases if (not capabilities or k.capability in capabilities)
                      and (not models or k.model in models))
        if cases:
            out.append(Client(c.id, c.title, c.driver, c.tier, c.configured, cases, c.path))
    return out
