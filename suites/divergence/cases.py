"""Read the divergence suite's data: prompt sets, distractors and protocol cases (all TOML)."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.suite import select_cases

HERE = Path(__file__).parent
CASES_FILE = HERE / "cases.toml"
PROMPTS_FILE = HERE / "prompts.toml"
DISTRACTORS_FILE = HERE / "distractors.toml"


@dataclass(frozen=True)
class Prompt:
    id: str  # "<set>-<NN>"
    set: str
    text: str
    max_tokens: int


@dataclass(frozen=True)
class Distractor:
    id: str  # "d-<NN>"
    text: str
    max_tokens: int


@dataclass(frozen=True)
class Case:
    name: str
    prompts: tuple[Prompt, ...]
    distractors: tuple[Distractor, ...]
    concurrency: tuple[int, ...]  # batch sizes, each >= 2
    control: bool = True
    min_exact: float = 0.9
    tags: tuple[str, ...] = field(default=())
    timeout_s: float = 900.0

    def describe(self) -> dict:
        """The manifest's workload entry: what was asked, and a digest of every text sent."""
        texts = [p.text for p in self.prompts] + [d.text for d in self.distractors]
        return {"name": self.name, "sets": list(dict.fromkeys(p.set for p in self.prompts)),
                "prompts": [p.id for p in self.prompts],
                "max_tokens": {s: next(p.max_tokens for p in self.prompts if p.set == s)
                               for s in dict.fromkeys(p.set for p in self.prompts)},
                "distractors": [d.id for d in self.distractors],
                "texts_sha256": hashlib.sha256("\x00".join(texts).encode()).hexdigest(),
                "concurrency": list(self.concurrency), "control": self.control, "min_exact": self.min_exact,
                "temperature": 0.0, "top_logprobs": 2, "tags": list(self.tags)}


def _text(spec: dict, where: str, base: Path) -> str:
    if ("prompt" in spec) == ("file" in spec):
        raise ValueError(f"{where}: give prompt or file, not both or neither")
    text = spec["prompt"] if "prompt" in spec else (base / spec["file"]).read_text()
    if not text.strip():
        raise ValueError(f"{where}: empty prompt")
    return text.strip()


def load_prompts(path: Path = PROMPTS_FILE) -> dict[str, tuple[Prompt, ...]]:
    """Prompt sets by name, each prompt with its id and its set's max_tokens."""
    data = tomllib.loads(path.read_text())
    sets = {}
    for name, spec in data.get("set", {}).items():
        inline, files = spec.get("prompts", []), spec.get("files", [])
        texts = [*inline, *[(path.parent / f).read_text().strip() for f in files]]
        if not texts or any(not t.strip() for t in texts):
            raise ValueError(f"prompt set {name!r} in {path.name} has no prompts, or an empty one")
        sets[name] = tuple(Prompt(f"{name}-{i:02d}", name, t, int(spec["max_tokens"]))
                           for i, t in enumerate(texts, start=1))
    return sets


def load_distractors(path: Path = DISTRACTORS_FILE) -> tuple[Distractor, ...]:
    data = tomllib.loads(path.read_text())
    out = tuple(Distractor(f"d-{i:02d}", _text(spec, f"distractor {i}", path.parent), int(spec["max_tokens"]))
                for i, spec in enumerate(data.get("distractor", []), start=1))
    if not out:
        raise ValueError(f"{path.name} holds no distractor")
    return out


def _sizes(values, where: str) -> tuple[int, ...]:
    sizes = tuple(int(v) for v in values)
    if not sizes or any(s < 2 for s in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"{where}: batch sizes must be distinct integers of at least 2, not {list(values)}")
    return sizes


def parse_concurrency(text: str | None) -> tuple[int, ...] | None:
    """A --concurrency value such as "2,4,8"; None when not given."""
    if not text:
        return None
    try:
        return _sizes([p for p in text.split(",") if p.strip()], "--concurrency")
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def load_cases(select: list[str] | None = None, *, concurrency: tuple[int, ...] | None = None,
               limit: int | None = None, min_exact: float | None = None, path: Path = CASES_FILE,
               prompts_path: Path = PROMPTS_FILE, distractors_path: Path = DISTRACTORS_FILE) -> list[Case]:
    """Cases whose name or any tag is in `select` (all when None), with command-line overrides."""
    data = tomllib.loads(path.read_text())
    sets, distractors = load_prompts(prompts_path), load_distractors(distractors_path)
    cases = []
    for raw in data.get("case", []):
        unknown = [s for s in raw["sets"] if s not in sets]
        if unknown:
            raise ValueError(f"case {raw['name']!r} names unknown prompt sets {unknown}; known: {', '.join(sets)}")
        prompts = tuple(p for s in raw["sets"] for p in sets[s])
        n = limit if limit is not None else raw.get("limit")
        if n is not None:
            if n < 1:
                raise ValueError("the prompt limit must be at least 1")
            prompts = prompts[:n]
        threshold = float(raw.get("min_exact", 0.9) if min_exact is None else min_exact)
        if not 0 <= threshold <= 1:
            raise ValueError(f"min_exact must be between 0 and 1, not {threshold}")
        cases.append(Case(raw["name"], prompts, distractors,
                          concurrency or _sizes(raw["concurrency"], f"case {raw['name']!r}"),
                          bool(raw.get("control", True)), threshold, tuple(raw.get("tags", ()))))
    return select_cases(cases, select, noun="divergence case")
