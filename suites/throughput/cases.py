"""Read throughput case files and turn a case into request bodies."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.loadgen import Arrival

CASES_FILE = Path(__file__).with_name("cases.toml")


@dataclass(frozen=True)
class Case:
    name: str
    prompts: tuple[str, ...]
    requests: int
    max_tokens: int
    arrival: Arrival
    tags: tuple[str, ...] = field(default=())

    @property
    def concurrency(self) -> int | None:
        return self.arrival.concurrency if self.arrival.kind == "concurrency" else None

    def describe(self) -> dict:
        return {"name": self.name, "requests": self.requests, "max_tokens": self.max_tokens,
                "arrival": self.arrival.kind, "concurrency": self.concurrency,
                "rate_rps": self.arrival.rate_rps, "tags": list(self.tags),
                "prompts": list(self.prompts)}

    def bodies(self, *, model: str | None, repeat: int) -> list[dict]:
        """Greedy chat requests; `model` None omits the field (mlx_lm.server needs that)."""
        out = []
        for i in range(self.requests):
            body = {"messages": [{"role": "user", "content": self.prompts[i % len(self.prompts)]}],
                    "max_tokens": self.max_tokens, "temperature": 0.0}
            if model is not None:
                body["model"] = model
            out.append(body)
        return out


def _prompts(spec: dict, base: Path) -> tuple[str, ...]:
    fields = {}
    if "document_file" in spec:
        fields["document"] = (base / spec["document_file"]).read_text()
    return tuple(spec["template"].format(item=item, **fields) for item in spec["items"])


def load_cases(select: list[str] | None = None, *, path: Path = CASES_FILE) -> list[Case]:
    """Cases whose name or any tag is in `select` (all cases when None), in file order."""
    data = tomllib.loads(path.read_text())
    sets = {name: _prompts(spec, path.parent) for name, spec in data.get("prompt_set", {}).items()}
    cases = []
    for raw in data.get("case", []):
        if raw["prompts"] not in sets:
            raise ValueError(f"case {raw['name']!r} names unknown prompt set {raw['prompts']!r}")
        arrival = Arrival(kind=raw.get("arrival", "concurrency"), concurrency=raw.get("concurrency", 1),
                          rate_rps=raw.get("rate_rps"), seed=raw.get("seed", 0))
        cases.append(Case(raw["name"], sets[raw["prompts"]], raw["requests"], raw["max_tokens"],
                          arrival, tuple(raw.get("tags", ()))))
    if select is None:
        return cases
    chosen = [c for c in cases if c.name in select or set(c.tags) & set(select)]
    known = sorted({c.name for c in cases} | {t for c in cases for t in c.tags})
    unknown = [s for s in select if s not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown case or tag {', '.join(unknown) or select}; known: {', '.join(known)}")
    return chosen
