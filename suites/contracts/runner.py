"""Run client cases against served models and turn each into a raw `contract_case` record.

The runner owns the judging rules every driver shares: a Blocked exception is `blocked` with
its message; any other exception, or a case that overruns its time, is `fail` naming it.
Cases run one at a time so the recording proxy can tell whose requests it saw.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .cases import Client
from .driver import BLOCKED, CONDITIONAL, FAIL, PASS, Blocked, Case, Outcome, Target, load

DEFAULT_TIMEOUT_S = 300.0


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def run_case(case: Case, target: Target, driver: Callable[[Case, Target], Outcome]) -> tuple[dict, float]:
    """(the record's verdict fields, seconds taken). The driver runs on a worker thread so a
    hung client is cut off at target.timeout_s (its process is the driver's to kill)."""
    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"contract-{case.client}")
    try:
        outcome = pool.submit(driver, case, target).result(timeout=target.timeout_s)
        verdict = {"status": outcome.status, "reason": outcome.reason, "condition": outcome.condition,
                   "detail": outcome.detail, "artifacts": list(outcome.artifacts)}
    except Blocked as exc:
        verdict = {"status": BLOCKED, "reason": str(exc) or "blocked", "condition": None, "detail": {},
                   "artifacts": []}
    except concurrent.futures.TimeoutError:
        verdict = {"status": FAIL, "reason": f"no result within {target.timeout_s:.0f} s", "condition": None,
                   "detail": {}, "artifacts": []}
    except Exception as exc:  # noqa: BLE001 - a client's failure is the case's verdict, not ours
        verdict = {"status": FAIL, "reason": _one_line(exc), "condition": None,
                   "detail": {"traceback": traceback.format_exc()[-2000:]}, "artifacts": []}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return verdict, time.monotonic() - started


def record(case: Case, verdict: dict, seconds: float, *, server: str, requests: list[dict],
           conformance: dict) -> dict:
    """A case the client got through still fails when one of our responses broke the SDK types:
    the contract is ours to keep, whatever a lenient client puts up with."""
    if verdict["status"] in (PASS, CONDITIONAL) and conformance["failures"]:
        verdict = {**verdict, "status": FAIL,
                   "reason": f"the client coped, but a response broke the SDK types: {conformance['failures'][0]}"}
    return {"type": "contract_case", "server": server, "client": case.client, "capability": case.capability,
            "action": case.action, "model": case.model, **verdict, "latency_s": seconds,
            "requests": requests, "conformance": conformance}


def target_for(case: Case, *, base_url: str, api_key: str, model: str, root: Path, env: dict[str, str],
               timeout_s: float | None = None) -> Target:
    """A fresh scratch folder per case, and the run's artifacts folder per client."""
    name = safe_name(case.key)
    workdir = root / "work" / name
    artifacts = root / "artifacts" / safe_name(case.client)
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    return Target(base_url, api_key, model, workdir, artifacts,
                  float(case.args.get("timeout_s", timeout_s or DEFAULT_TIMEOUT_S)), env)


def drivers_for(clients: list[Client]) -> dict[str, Callable[[Case, Target], Outcome]]:
    return {c.driver: load(c.driver) for c in clients}
