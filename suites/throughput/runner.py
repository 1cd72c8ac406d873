"""The throughput runner: a case's requests (or conversations) over HTTP, one repeat at a time.

Each request is a raw "request" record (harness/loadgen.py times it); each repeat ends with a
"run" record holding its wall time and the server's peak RSS.
"""

from __future__ import annotations

from harness.loadgen import run_conversations
from harness.rss import PeakRss


def warm_up(target, case, requests: int) -> None:
    # A conversation warms up whole: its later turns are requests too.
    warm = case.conversations(model=target.model_field, repeat=-1)[: max(requests, 1)]
    run_conversations(target.server.base_url, warm, case.arrival)


def run(target, case, repeat: int) -> list[dict]:
    conversations = case.conversations(model=target.model_field, repeat=repeat)
    with PeakRss(target.server.pid) as rss:
        records, wall = run_conversations(target.server.base_url, conversations, case.arrival)
    tag = {"server": target.spec.label, "case": case.name, "repeat": repeat}
    for rec in records:
        rec.update(tag, concurrency=case.concurrency, rate_rps=case.arrival.rate_rps)
    return [*records, {"type": "run", **tag, "wall_s": wall, "peak_rss_mb": rss.peak_mb}]
