"""Served models behind recording proxies, and the loop that runs client cases against them.

The default model serves every case; the tool model (qwen2.5-coder-0.5b) is started only when
a selected case asks for it (model = "tools"), and so are the agent model (qwen2.5-coder-1.5b,
model = "agent") and the vision model (model = "vision"): no
vision-language model ships offline, so it is the tiny random-weight qwen2_vl that
`serving models --build-tiny-vlm` writes into the run's folder (its answers are noise; the
cases judge the contract). Both require an API key, made fresh per run, so
every client is also checked for sending it, and both refuse model ids they do not serve.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import MODELS, Client
from .proxy import RecordingProxy
from .runner import drivers_for, record, run_case, target_for

# Both are what a client must get right, so the suite turns them on: an unknown model id is a
# 404 (our default answers any id, for clients that hard-code theirs), and every request needs the key.
SERVE_ARGS = ("--strict-model-id",)
# The models a capability needs served beside the chat model; started only when a selected case asks.
BESIDE = {"embeddings": ("--embedding-model", "all-minilm-l6-v2"), "transcription": ("--asr-model", "whisper-tiny.en")}


@dataclass(frozen=True)
class Served:
    kind: str                # default | tools
    model_id: str
    proxy: RecordingProxy
    api_key: str
    argv: tuple[str, ...]    # the key shown as <key>
    folder: Any              # harness.servers.ModelFolder
    health: dict             # /health when it started (open without the key)


def _built_tiny_vlm(root: Path) -> str:
    import subprocess
    import sys

    folder = root / "tiny-vlm"
    subprocess.run([sys.executable, "-m", "serving", "models", "--build-tiny-vlm", str(folder)], check=True,
                   capture_output=True)
    return str(folder)


def _health(target) -> dict:
    try:
        return target.server.health()
    except Exception:  # informational: the manifest says "unknown" where it is missing
        return {}


@contextlib.contextmanager
def served_models(clients: list[Client], *, root: Path, profile: str = "text-default",
                  models: dict[str, str] | None = None, dump_dir: Path | None = None,
                  log=print) -> Iterator[dict[str, Served]]:
    from harness.bench import resolve_model_folder
    from harness.servers import ServerSpec, launch

    models = {**MODELS, **(models or {})}
    needed = sorted({case.model for client in clients for case in client.cases})
    key = "sk-contracts-" + secrets.token_hex(12)
    with contextlib.ExitStack() as stack:
        served: dict[str, Served] = {}
        for kind in needed:
            name = _built_tiny_vlm(root) if kind == "vision" and models[kind] == MODELS["vision"] else models[kind]
            folder = resolve_model_folder(name)
            beside = tuple(arg for capability in sorted({case.capability for client in clients for case in client.cases
                                                         if case.model == kind})
                           for arg in BESIDE.get(capability, ()))
            spec = ServerSpec(f"ours-{kind}", "mlx-proof", extra_args=SERVE_ARGS + beside + ("--api-key", key))
            log(f"starting ours on {folder.model_id} ({kind} model) with an API key")
            target = stack.enter_context(launch(spec, model=folder, profile=profile, log_dir=root / "logs",
                                                preload=None))
            proxy = stack.enter_context(RecordingProxy(target.server.base_url,
                                                                dump_dir and dump_dir / kind))
            argv = tuple(a if a != key else "<key>" for a in target.argv)
            served[kind] = Served(kind, folder.model_id, proxy, key, argv, folder, _health(target))
        yield served


def run_clients(clients: list[Client], served: dict[str, Served], *, root: Path,
                on_done: Callable[[dict], None] | None, env: dict[str, str] | None = None) -> list[dict]:
    drivers = drivers_for(clients)
    records = []
    for client in clients:
        for case in client.cases:
            s = served[case.model]
            s.proxy.take()  # anything left over belongs to no case
            target = target_for(case, base_url=s.proxy.base_url, api_key=s.api_key, model=s.model_id,
                                root=root, env=env or {})
            verdict, seconds = run_case(case, target, drivers[client.driver])
            requests, conformance = s.proxy.take()
            rec = record(case, verdict, seconds, server=f"ours-{case.model}", requests=requests,
                         conformance=conformance)
            records.append(rec)
            if on_done:
                on_done(rec)
    return records
