"""What a driver gets and gives back.

A driver module (drivers/<name>.py) exposes

    def run(case: Case, target: Target) -> Outcome

It drives one real client program the way its users drive it, against `target` (a recording
proxy in front of our server on 127.0.0.1), and judges the result. It raises Blocked when the
client cannot run here at all (not installed, needs the network); any other exception is a
`fail` with the exception as its reason. Drivers talk to the server only through the client.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

PASS, FAIL, BLOCKED, CONDITIONAL = "pass", "fail", "blocked", "conditional"
STATUSES = (PASS, CONDITIONAL, FAIL, BLOCKED)


class Blocked(Exception):
    """The client cannot run here; the message is the matrix cell's reason."""


@dataclass(frozen=True)
class Case:
    client: str            # the client file's id: the matrix row
    capability: str        # the matrix column (CAPABILITIES in cases.py)
    action: str            # what the driver does; each driver documents its actions
    model: str             # which served model the case needs: cases.MODELS' keys
    args: dict[str, Any] = field(default_factory=dict)  # the case's own settings, driver-specific

    @property
    def key(self) -> str:
        return f"{self.client}/{self.capability}/{self.action}"


@dataclass(frozen=True)
class Target:
    base_url: str          # http://127.0.0.1:PORT, no /v1: the proxy in front of the server
    api_key: str           # the server requires it (Bearer or x-api-key)
    model: str             # the served model id, as /v1/models lists it
    workdir: Path          # this case's scratch folder (configs, HOME for CLIs); already exists
    artifacts: Path        # files kept as evidence (screenshots, transcripts); already exists
    timeout_s: float       # for the whole case
    env: dict[str, str] = field(default_factory=dict)  # extra environment for client processes (PATH)

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"


@dataclass(frozen=True)
class Outcome:
    status: str            # pass | fail | conditional (blocked is raised, not returned)
    reason: str            # one line a reader can act on; for pass, what was seen
    condition: str | None = None   # for conditional: what must hold for it to pass
    detail: dict[str, Any] = field(default_factory=dict)  # small JSON facts (the answer, counts)
    artifacts: tuple[str, ...] = ()  # file names under target.artifacts

    def __post_init__(self) -> None:
        if self.status not in (PASS, FAIL, CONDITIONAL):
            raise ValueError(f"an outcome is pass, fail or conditional, not {self.status!r}")
        if self.status == CONDITIONAL and not self.condition:
            raise ValueError("a conditional outcome names its condition")


def passed(reason: str, **detail) -> Outcome:
    return Outcome(PASS, reason, detail=detail)


def failed(reason: str, **detail) -> Outcome:
    return Outcome(FAIL, reason, detail=detail)


def check(ok: bool, pass_reason: str, fail_reason: str, **detail) -> Outcome:
    return passed(pass_reason, **detail) if ok else failed(fail_reason, **detail)


def lacks(text: str, expect: str | None) -> str | None:
    """Why text lacks the case's content signal (case-insensitive), or None when it has it or
    none is set. Signals are used only where the greedy tiny model is stable."""
    if expect and expect.lower() not in text.lower():
        return f"the answer lacks {expect!r}"
    return None


def answered(text: str, expect: str | None, what: str, **detail) -> Outcome:
    """The shared verdict on an answer: non-empty text, carrying `expect` when one is set."""
    text = text.strip()
    if not text:
        return failed(f"{what}: empty answer", answer=text, **detail)
    problem = lacks(text, expect)
    return check(problem is None, f"{what}: answered {text[:80]!r}", f"{what}: {problem}: {text[:120]!r}",
                 answer=text, **detail)


def error_or_answer(send: Callable[[], Any], error: type, shown: str, what: str):
    """(answer, None) when `send()` was answered; (None, outcome) when it raised: a pass for
    `error` (shown as `shown`, e.g. "openai.NotFoundError"), a fail naming any other class."""
    try:
        return send(), None
    except error as exc:
        return None, passed(f"{what} -> {shown} (status {getattr(exc, 'status_code', '?')})", error=str(exc)[:300])
    except Exception as exc:  # noqa: BLE001 - the wrong class is the finding
        return None, failed(f"{what} -> {type(exc).__module__}.{type(exc).__name__}, not {shown}: "
                            f"{' '.join(str(exc).split())[:200]}")


def with_artifacts(outcome: Outcome, *names: str) -> Outcome:
    return dataclasses.replace(outcome, artifacts=outcome.artifacts + names)


def load(driver: str) -> Callable[[Case, Target], Outcome]:
    """drivers/<driver>.py's run; ValueError naming the known drivers if there is none."""
    # drivers/_*.py are helpers the drivers share, never drivers themselves
    known = sorted(p.stem for p in (Path(__file__).parent / "drivers").glob("*.py") if not p.stem.startswith("_"))
    if driver not in known:
        raise ValueError(f"unknown contract driver {driver!r} (known: {', '.join(known)})")
    return importlib.import_module(f"{__package__}.drivers.{driver}").run


VISION_CONDITION = "needs a vision model: a text model refuses images with a 400"


def image_outcome(case: Case, *, refused: str | None, text: str = "", prompt_tokens: int | None = None,
                  finish: str | None = None) -> Outcome:
    """The shared verdict on an image sent to the served model. A vision model (the tiny random
    qwen2_vl: its words are noise) must answer with a finished turn whose usage counts the image;
    a text model must refuse the image with a 400 rather than drop it and answer."""
    if case.model == "vision":
        if refused is not None:
            return failed(f"the vision model refused the image: {refused[:160]}")
        counted = prompt_tokens is not None and prompt_tokens > 0
        return check(counted and finish is not None,
                     f"answered an image: finish {finish!r}, {prompt_tokens} prompt tokens, text {text[:40]!r}",
                     f"an answer without a finish or prompt usage: finish {finish!r}, prompt tokens {prompt_tokens}",
                     answer=text[:200], prompt_tokens=prompt_tokens, finish=finish)
    if refused is not None:
        return Outcome(CONDITIONAL, f"the text model refused the image cleanly: 400 {refused[:160]}",
                       condition=VISION_CONDITION)
    return failed(f"a text model answered an image: {text[:80]!r}: the image was dropped instead of refused")
