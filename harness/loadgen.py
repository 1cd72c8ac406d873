"""A streaming OpenAI client that measures each request, under a chosen arrival pattern.

Closed loop: at most `concurrency` requests in flight, the next one sent as a
slot frees. Open loop: requests fire on a clock (fixed rate or Poisson),
whether or not earlier ones have finished, so a slow server builds a queue
instead of slowing the clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Callable

import httpx
import numpy as np


@dataclass(frozen=True)
class Arrival:
    kind: str = "concurrency"  # concurrency | poisson | fixed
    concurrency: int = 1
    rate_rps: float | None = None
    seed: int = 0

    def offsets(self, n: int) -> list[float] | None:
        """Send times for open-loop arrivals, None for the closed loop."""
        if self.kind == "concurrency":
            return None
        if not self.rate_rps or self.rate_rps <= 0:
            raise ValueError(f"{self.kind} arrivals need a positive rate_rps")
        if self.kind == "fixed":
            return [i / self.rate_rps for i in range(n)]
        if self.kind == "poisson":
            gaps = np.random.default_rng(self.seed).exponential(1 / self.rate_rps, n)
            return list(np.concatenate([[0.0], np.cumsum(gaps[:-1])]))
        raise ValueError(f"unknown arrival kind {self.kind!r}; known: concurrency, poisson, fixed")


def _record(index: int, start_s: float) -> dict:
    return {"type": "request", "index": index, "start_s": start_s, "ttft_s": None, "itl_s": [],
            "e2e_s": None, "prompt_tokens": None, "completion_tokens": None, "finish_reason": None,
            "status": "incomplete", "error": None}


async def stream_one(client: httpx.AsyncClient, url: str, body: dict, *, index: int,
                     t0: float, timeout_s: float) -> dict:
    """Send one streamed chat request and time every content chunk."""
    sent = time.perf_counter()
    rec = _record(index, sent - t0)
    stamps: list[float] = []
    done = False
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    try:
        async with client.stream("POST", url, json=payload, timeout=timeout_s) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:300]
                rec.update(status="error", error=f"HTTP {resp.status_code}: {text}")
                return rec
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    rec.update(status="error", error=str(chunk["error"].get("message")))
                    return rec
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content") or choice.get("text"):
                        stamps.append(time.perf_counter())
                    if choice.get("finish_reason"):
                        rec["finish_reason"] = choice["finish_reason"]
                if chunk.get("usage"):
                    rec["prompt_tokens"] = chunk["usage"].get("prompt_tokens")
                    rec["completion_tokens"] = chunk["usage"].get("completion_tokens")
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}")
        return rec
    end = time.perf_counter()
    rec["e2e_s"] = end - sent
    if stamps:
        rec["ttft_s"] = stamps[0] - sent
        rec["itl_s"] = [b - a for a, b in zip(stamps, stamps[1:])]
    if done and rec["finish_reason"] and rec["completion_tokens"] is not None:
        rec["status"] = "ok"
    else:
        rec["error"] = "stream ended without finish_reason, usage and [DONE]"
    return rec


async def _run(url: str, bodies: list[dict], arrival: Arrival, *, timeout_s: float,
               on_done: Callable[[dict], None]) -> tuple[list[dict], float]:
    limits = httpx.Limits(max_connections=max(arrival.concurrency, 64), max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits) as client:
        offsets = arrival.offsets(len(bodies))
        gate = asyncio.Semaphore(arrival.concurrency if offsets is None else len(bodies) or 1)
        t0 = time.perf_counter()

        async def one(i: int, body: dict) -> dict:
            if offsets is not None:
                await asyncio.sleep(max(0.0, t0 + offsets[i] - time.perf_counter()))
            async with gate:
                rec = await stream_one(client, url, body, index=i, t0=t0, timeout_s=timeout_s)
            on_done(rec)
            return rec

        records = await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        return list(records), time.perf_counter() - t0


def run_load(base_url: str, bodies: list[dict], arrival: Arrival, *, timeout_s: float = 600,
             on_done: Callable[[dict], None] = lambda rec: None) -> tuple[list[dict], float]:
    """Send every body as a streamed chat request; return (records, wall seconds)."""
    url = base_url.rstrip("/") + "/v1/chat/completions"
    return asyncio.run(_run(url, bodies, arrival, timeout_s=timeout_s, on_done=on_done))
