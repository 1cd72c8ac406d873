"""Read cases.toml, select categories, and load a deterministic sample of BFCL cases."""

from __future__ import annotations

import json
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .data import Source, Unpacked

CASES_FILE = Path(__file__).with_name("cases.toml")
CHECKERS = ("simple", "multiple", "parallel", "irrelevance")
# auto and required: tool_choice; json_schema: no tools, response_format json_schema (strict) with
# the case's function's parameters as the schema, judged as that function's arguments (simple only).
MODES = ("auto", "required", "json_schema")


@dataclass(frozen=True)
class Category:
    name: str
    questions: str
    answers: str | None
    checker: str
    limit: int
    tags: tuple[str, ...] = ()

    def members(self) -> list[str]:
        return [self.questions] + ([self.answers] if self.answers else [])


@dataclass(frozen=True)
class Settings:
    source: Source
    categories: tuple[Category, ...]
    seed: int
    max_tokens: int
    modes: tuple[str, ...]
    concurrency: int
    stream: bool
    timeout_s: float


@dataclass(frozen=True, eq=False)
class ToolCase:
    id: str
    category: str
    checker: str
    messages: list[dict]
    functions: list[dict]  # BFCL function docs, as in the data
    answers: list[dict] | None  # BFCL ground truth: [{name: {param: [allowed values]}}]; None = no call


def _category(raw: dict) -> Category:
    name = raw["name"]
    if raw.get("checker") not in CHECKERS:
        raise ValueError(f"category {name!r}: checker {raw.get('checker')!r} unknown; known: {', '.join(CHECKERS)}")
    if (raw["checker"] == "irrelevance") == ("answers" in raw):
        raise ValueError(f"category {name!r}: an answers file goes with every checker but irrelevance")
    if int(raw["limit"]) < 1:
        raise ValueError(f"category {name!r}: limit must be at least 1")
    return Category(name, raw["questions"], raw.get("answers"), raw["checker"], int(raw["limit"]),
                    tuple(raw.get("tags", ())))


def check_modes(modes) -> tuple[str, ...]:
    modes = tuple(modes)
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes or len(set(modes)) != len(modes):
        raise ValueError(f"modes {list(modes)}: give one or more of {', '.join(MODES)}, each once")
    return modes


def load_settings(path: Path = CASES_FILE) -> Settings:
    data = tomllib.loads(Path(path).read_text())
    src, run = data["source"], data["run"]
    categories = tuple(_category(raw) for raw in data.get("category", []))
    names = [c.name for c in categories]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: a category name appears twice")
    return Settings(Source(src["package"], src["version"], src.get("sha256"), src.get("license", "unknown")),
                    categories, int(run["seed"]), int(run["max_tokens"]), check_modes(run["modes"]),
                    int(run.get("concurrency", 4)), bool(run.get("stream", False)), float(run.get("timeout_s", 900)))


def select(settings: Settings, names: list[str] | None) -> list[Category]:
    """Categories named (or tagged) in `names`, in file order; None or [] = the "default" tag."""
    wanted = names or ["default"]
    known = sorted({c.name for c in settings.categories} | {t for c in settings.categories for t in c.tags})
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown tool category or tag {', '.join(unknown)}; known: {', '.join(known)}")
    return [c for c in settings.categories if c.name in wanted or set(c.tags) & set(wanted)]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def sample_ids(ids: list[str], *, limit: int, seed: int, category: str) -> list[str]:
    """`limit` ids, the same for the same seed; a smaller limit is a prefix of a larger one's
    shuffle, so its cases are a subset. Returned in file order."""
    order = list(ids)
    random.Random(f"{seed}:{category}").shuffle(order)
    chosen = set(order[:limit])
    return [i for i in ids if i in chosen]


def load_cases(category: Category, data: Unpacked, *, seed: int,
               limit: int | None = None) -> tuple[list[ToolCase], int]:
    """(the sampled cases, how many the file holds)."""
    questions = _jsonl(data.files[category.questions])
    answers = {a["id"]: a["ground_truth"] for a in _jsonl(data.files[category.answers])} if category.answers else {}
    ids = [q["id"] for q in questions]
    chosen = set(sample_ids(ids, limit=limit or category.limit, seed=seed, category=category.name))
    cases = []
    for q in questions:
        if q["id"] not in chosen:
            continue
        if len(q["question"]) != 1:
            raise ValueError(f"{q['id']}: {len(q['question'])} turns; only single-turn categories are supported")
        if category.answers and q["id"] not in answers:
            raise ValueError(f"{q['id']}: no possible answer in {category.answers}")
        cases.append(ToolCase(q["id"], category.name, category.checker, list(q["question"][0]), q["function"],
                              answers.get(q["id"]) if category.answers else None))
    return cases, len(questions)


@dataclass
class Workload:
    """What one run sends: the cases of each selected category, under each mode."""

    settings: Settings
    categories: list[Category]
    cases: list[ToolCase] = field(default_factory=list)
    available: dict[str, int] = field(default_factory=dict)
    modes: tuple[str, ...] = ()
    data: Unpacked | None = None

    def units(self) -> list[tuple[ToolCase, str]]:
        return [(case, mode) for case in self.cases for mode in self.modes]

    def describe(self) -> list[dict]:
        """One manifest workload entry per category: the data, its pin, the sample and the settings."""
        s, d = self.settings, self.data
        out = []
        for c in self.categories:
            chosen = [case.id for case in self.cases if case.category == c.name]
            entry = {"name": c.name, "checker": c.checker, "source": s.source.requirement,
                     "license": s.source.license, "wheel_sha256": d.wheel_sha256 if d else None,
                     "questions": c.questions, "questions_sha256": d.sha256(c.questions) if d else None,
                     "answers": c.answers, "answers_sha256": d.sha256(c.answers) if d and c.answers else None,
                     "available": self.available.get(c.name), "selected": len(chosen), "seed": s.seed,
                     "modes": list(self.modes), "max_tokens": s.max_tokens, "temperature": 0.0,
                     "parallel_tool_calls": True, "concurrency": s.concurrency, "stream": s.stream,
                     "timeout_s": s.timeout_s}
            out.append(entry)
        return out


def build_workload(settings: Settings, data: Unpacked, *, categories: list[Category], limit: int | None = None,
                   modes: tuple[str, ...] | None = None) -> Workload:
    work = Workload(settings, categories, modes=check_modes(modes or settings.modes), data=data)
    for category in categories:
        cases, available = load_cases(category, data, seed=settings.seed, limit=limit)
        work.cases += cases
        work.available[category.name] = available
    return work
