"""The throughput runner: a case's requests (or conversations) over HTTP, one repeat at a time.

Each request is a raw "request" record (harness/loadgen.py times it); each repeat ends with a
"run" record holding its wall time, the server's peak RSS and how busy the machine was outside
the run (harness/machine_load.py).
"""

from __future__ import annotations

from harness.loadgen import run_conversations
from harness.machine_load import MachineLoad
from harness.rss import PeakRss


def serves(target, case) -> bool:
    """Peers serve chat only: a case for another endpoint (embeddings) runs on ours alone."""
    return not case.ours_only or target.spec.kind == "mlx-proof"


def embedding_model_args(cases) -> tuple[str, ...]:
    """Our servers also serve the embedding model that the chosen embeddings cases use."""
    wanted = sorted({c.embedding_model for c in cases if c.endpoint == "embeddings"})
    if len(wanted) > 1:
        raise ValueError(f"the chosen cases use several embedding models ({', '.join(wanted)}); a server serves one")
    return ("--embedding-model", wanted[0]) if wanted else ()


def warm_up(target, case, requests: int) -> None:
    # At least one wave at the case's concurrency: a server that builds (or compiles) something
    # per batch shape meets every shape the case reaches before the first measured repeat, not
    # inside it. A conversation warms up whole: its later turns are requests too.
    warm = case.conversations(model=target.model_field, repeat=-1)[: max(requests, case.concurrency or 1, 1)]
    run_conversations(target.server.base_url, warm, case.arrival, endpoint=case.endpoint)


def run(target, case, repeat: int) -> list[dict]:
    conversations = case.conversations(model=target.model_field, repeat=repeat)
    with PeakRss(target.server.pid) as rss, MachineLoad() as load:
        records, wall = run_conversations(target.server.base_url, conversations, case.arrival,
                                          endpoint=case.endpoint)
    tag = {"server": target.spec.label, "case": case.name, "repeat": repeat}
    for rec in records:
        rec.update(tag, concurrency=case.concurrency, rate_rps=case.arrival.rate_rps)
    return [*records, {"type": "run", **tag, "wall_s": wall, "peak_rss_mb": rss.peak_mb,
                       "foreign_cpu": load.foreign_cpu, "steal_cpu": load.steal_cpu}]
