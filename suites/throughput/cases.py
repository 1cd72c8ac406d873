"""Read throughput case files and turn a case into request bodies or conversations."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.loadgen import ENDPOINTS, Arrival, Conversation
from harness.suite import select_cases

CASES_FILE = Path(__file__).with_name("cases.toml")
UID = "{uid}"  # filled per request when bodies are built; see cases.toml's header


@dataclass(frozen=True)
class PromptSet:
    prompts: tuple[str, ...]
    system: str | None = None
    followups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    prompts: tuple[str, ...]
    requests: int  # single requests, or conversations when turns > 1
    max_tokens: int
    arrival: Arrival
    tags: tuple[str, ...] = field(default=())
    system: str | None = None
    turns: int = 1
    followups: tuple[str, ...] = ()  # user messages of turns 2..turns, in order
    extra_body: dict = field(default_factory=dict)  # more request fields, e.g. response_format
    endpoint: str = "chat"  # or "embeddings": our server only (peers serve no /v1/embeddings)
    embedding_model: str | None = None  # what an embeddings case embeds with (--embedding-model)
    inputs: int = 1  # texts per embeddings request

    @property
    def ours_only(self) -> bool:
        """Peer servers serve chat only; an embeddings case runs on ours alone."""
        return self.endpoint != "chat"

    @property
    def concurrency(self) -> int | None:
        return self.arrival.concurrency if self.arrival.kind == "concurrency" else None

    def describe(self) -> dict:
        out = {"name": self.name, "requests": self.requests, "max_tokens": self.max_tokens,
               "arrival": self.arrival.kind, "concurrency": self.concurrency,
               "rate_rps": self.arrival.rate_rps, "tags": list(self.tags),
               "prompts": list(self.prompts)}
        if self.arrival.ramp_s:
            out["ramp_s"] = self.arrival.ramp_s
        if self.system is not None:
            out["system"] = self.system
        if self.turns > 1:
            out.update(conversations=self.requests, turns=self.turns, followups=list(self.followups))
        if self.extra_body:
            out["body"] = self.extra_body
        if self.endpoint != "chat":
            out.update(endpoint=self.endpoint, embedding_model=self.embedding_model, inputs=self.inputs,
                       servers="ours only: the peer servers serve no /v1/embeddings")
        return out

    def _first_body(self, i: int, *, model: str | None, repeat: int) -> dict:
        # The uid differs across repeats and warm-up, so a cache can reuse only what a
        # real client shares (the system prompt, a conversation's own history), never
        # the same request from an earlier repeat.
        uid = f"r{repeat}-{i}" if repeat >= 0 else f"warmup-{i}"
        if self.endpoint == "embeddings":
            texts = [self.prompts[(i * self.inputs + k) % len(self.prompts)].replace(UID, f"{uid}-{k}")
                     for k in range(self.inputs)]
            return {"model": self.embedding_model, "input": texts, **self.extra_body}
        messages = [{"role": "system", "content": self.system}] if self.system is not None else []
        messages.append({"role": "user", "content": self.prompts[i % len(self.prompts)].replace(UID, uid)})
        body = {"messages": messages, "max_tokens": self.max_tokens, "temperature": 0.0, **self.extra_body}
        if model is not None:
            body["model"] = model
        return body

    def bodies(self, *, model: str | None, repeat: int) -> list[dict]:
        """Greedy chat requests; `model` None omits the field (mlx_lm.server needs that).

        Embeddings requests name the case's embedding model instead, and carry `inputs` texts."""
        if self.turns > 1:
            raise ValueError(f"case {self.name!r} is multi-turn: its later turns depend on the answers; "
                             "use conversations()")
        return [self._first_body(i, model=model, repeat=repeat) for i in range(self.requests)]

    def conversations(self, *, model: str | None, repeat: int) -> list[Conversation]:
        """One Conversation per request (single-turn cases: conversations of one turn)."""
        followups = self.followups[: self.turns - 1]
        return [Conversation(self._first_body(i, model=model, repeat=repeat), followups)
                for i in range(self.requests)]


def _prompt_set(name: str, spec: dict, base: Path) -> PromptSet:
    fields = {}
    if "document_file" in spec:
        fields["document"] = (base / spec["document_file"]).read_text()
    if "system" in spec and "system_file" in spec:
        raise ValueError(f"prompt set {name!r}: give system or system_file, not both")
    system = (base / spec["system_file"]).read_text().strip() if "system_file" in spec else spec.get("system")
    prompts = tuple(spec["template"].format(item=item, uid=UID, **fields) for item in spec["items"])
    return PromptSet(prompts, system, tuple(spec.get("followups", ())))


def _size(raw: dict, turns: int) -> int:
    """How many units a repeat sends: `requests` for single turns, `conversations` otherwise."""
    key, other = ("conversations", "requests") if turns > 1 else ("requests", "conversations")
    if other in raw or key not in raw:
        raise ValueError(f"case {raw['name']!r} with turns = {turns} needs {key!r} (and no {other!r})")
    return raw[key]


def _case(raw: dict, sets: dict[str, PromptSet]) -> Case:
    if raw["prompts"] not in sets:
        raise ValueError(f"case {raw['name']!r} names unknown prompt set {raw['prompts']!r}")
    chosen, turns = sets[raw["prompts"]], raw.get("turns", 1)
    if turns < 1 or len(chosen.followups) < turns - 1:
        raise ValueError(f"case {raw['name']!r} wants {turns} turns but prompt set {raw['prompts']!r} "
                         f"has {len(chosen.followups)} followups")
    arrival = Arrival(kind=raw.get("arrival", "concurrency"), concurrency=raw.get("concurrency", 1),
                      rate_rps=raw.get("rate_rps"), seed=raw.get("seed", 0), ramp_s=raw.get("ramp_s", 0.0))
    if arrival.ramp_s < 0 or (arrival.ramp_s and arrival.kind != "concurrency"):
        raise ValueError(f"case {raw['name']!r}: ramp_s must be >= 0, and only closed-loop (concurrency) cases ramp")
    endpoint = raw.get("endpoint", "chat")
    if endpoint not in ENDPOINTS:
        raise ValueError(f"case {raw['name']!r}: unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
    if endpoint == "embeddings":
        if turns != 1 or chosen.system is not None or not raw.get("embedding_model") or raw.get("inputs", 1) < 1:
            raise ValueError(f"embeddings case {raw['name']!r} needs embedding_model and inputs >= 1, "
                             "and takes no turns and no system prompt")
    elif "embedding_model" in raw or "inputs" in raw:
        raise ValueError(f"case {raw['name']!r}: embedding_model and inputs belong to endpoint = \"embeddings\"")
    max_tokens = raw.get("max_tokens", 0) if endpoint == "embeddings" else raw["max_tokens"]
    return Case(raw["name"], chosen.prompts, _size(raw, turns), max_tokens, arrival,
                tuple(raw.get("tags", ())), chosen.system, turns, chosen.followups[: turns - 1],
                dict(raw.get("body", {})), endpoint, raw.get("embedding_model"), raw.get("inputs", 1))


def load_cases(select: list[str] | None = None, *, path: Path = CASES_FILE) -> list[Case]:
    """Cases whose name or any tag is in `select` (all cases when None), in file order."""
    data = tomllib.loads(path.read_text())
    sets = {name: _prompt_set(name, spec, path.parent) for name, spec in data.get("prompt_set", {}).items()}
    return select_cases([_case(raw, sets) for raw in data.get("case", [])], select)
