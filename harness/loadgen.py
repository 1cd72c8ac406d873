"""A streaming OpenAI client that measures each request, under a chosen arrival pattern.

Closed loop: at most `concurrency` requests in flight, the next one sent as a
slot frees. Open loop: requests fire on a clock (fixed rate or Poisson),
whether or not earlier ones have finished, so a slow server builds a queue
instead of slowing the clock.

A conversation holds one slot (or one arrival) for all its turns: each turn is
sent when the previous one has finished, and resends the whole history with the
answer the server actually streamed, as a chat client does. There is no think
time between turns. Single requests are conversations of one turn.

The endpoint is streamed chat by default; "embeddings" posts each body to /v1/embeddings
unstreamed, and its record counts the input tokens (usage.prompt_tokens) and no output.
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
class Conversation:
    """The first turn's request body and the user messages of the turns after it."""

    body: dict
    followups: tuple[str, ...] = ()

    @property
    def turns(self) -> int:
        return 1 + len(self.followups)


def next_turn(body: dict, answer: str, user: str) -> dict:
    """The body of the next turn: the history, the streamed answer, then the new user message."""
    history = [*body["messages"], {"role": "assistant", "content": answer}, {"role": "user", "content": user}]
    return {**body, "messages": history}


@dataclass(frozen=True)
class Arrival:
    kind: str = "concurrency"  # concurrency | poisson | fixed
    concurrency: int = 1
    rate_rps: float | None = None
    seed: int = 0
    # Closed loop only: the first `concurrency` clients start spread evenly over this many seconds
    # instead of at once (0: at once). A burst of connects overflows a listen backlog as small as
    # the standard library's 5 (mlx_lm.server's), so a small ramp measures serving, not accept().
    ramp_s: float = 0.0

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
            "e2e_s": None, "prompt_tokens": None, "completion_tokens": None, "cached_tokens": None,
            "finish_reason": None, "status": "incomplete", "error": None}


def _cached_tokens(usage: dict) -> int | None:
    # Only servers with a prefix cache report this; absent means "not reported", not zero.
    details = usage.get("prompt_tokens_details")
    return details.get("cached_tokens") if isinstance(details, dict) else None


async def stream_one(client: httpx.AsyncClient, url: str, body: dict, *, index: int,
                     t0: float, timeout_s: float) -> tuple[dict, str]:
    """Send one streamed chat request, time every content chunk; return (record, answer text)."""
    sent = time.perf_counter()
    rec = _record(index, sent - t0)
    stamps: list[float] = []
    pieces: list[str] = []
    done = False
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    try:
        async with client.stream("POST", url, json=payload, timeout=timeout_s) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:300]
                rec.update(status="error", error=f"HTTP {resp.status_code}: {text}")
                return rec, ""
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
                    return rec, ""
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content") or choice.get("text")
                    if content:
                        stamps.append(time.perf_counter())
                        pieces.append(content)
                    if choice.get("finish_reason"):
                        rec["finish_reason"] = choice["finish_reason"]
                if chunk.get("usage"):
                    rec["prompt_tokens"] = chunk["usage"].get("prompt_tokens")
                    rec["completion_tokens"] = chunk["usage"].get("completion_tokens")
                    rec["cached_tokens"] = _cached_tokens(chunk["usage"])
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}")
        return rec, ""
    end = time.perf_counter()
    rec["e2e_s"] = end - sent
    if stamps:
        rec["ttft_s"] = stamps[0] - sent
        rec["itl_s"] = [b - a for a, b in zip(stamps, stamps[1:])]
    if done and rec["finish_reason"] and rec["completion_tokens"] is not None:
        rec["status"] = "ok"
    else:
        rec["error"] = "stream ended without finish_reason, usage and [DONE]"
    return rec, "".join(pieces)


async def embed_one(client: httpx.AsyncClient, url: str, body: dict, *, index: int,
                    t0: float, timeout_s: float) -> tuple[dict, str]:
    """Send one embeddings request (no stream: the answer comes whole); return (record, "")."""
    sent = time.perf_counter()
    rec = _record(index, sent - t0)
    try:
        resp = await client.post(url, json=body, timeout=timeout_s)
        if resp.status_code != 200:
            rec.update(status="error", error=f"HTTP {resp.status_code}: {resp.text[:300]}")
            return rec, ""
        answer = resp.json()
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}")
        return rec, ""
    rec["e2e_s"] = time.perf_counter() - sent
    inputs = body["input"] if isinstance(body.get("input"), list) else [body.get("input")]
    data, usage = answer.get("data"), answer.get("usage") or {}
    rec["prompt_tokens"] = usage.get("prompt_tokens")
    rec["completion_tokens"] = 0  # an embedding generates no tokens
    if isinstance(data, list) and len(data) == len(inputs) and rec["prompt_tokens"] is not None:
        rec["status"] = "ok"
    else:
        rec["error"] = f"expected {len(inputs)} embeddings and usage, got {len(data or [])} embeddings"
    return rec, ""


ENDPOINTS = {"chat": ("/v1/chat/completions", stream_one), "embeddings": ("/v1/embeddings", embed_one)}


async def run_conversation(client: httpx.AsyncClient, url: str, conv: Conversation, *, first_index: int,
                           number: int | None, t0: float, timeout_s: float,
                           on_done: Callable[[dict], None], send=stream_one) -> list[dict]:
    """Every turn of one conversation, in order; `number` None marks a single-turn workload."""
    records, body, answer = [], conv.body, ""
    for turn in range(conv.turns):
        if turn:
            body = next_turn(body, answer, conv.followups[turn - 1])
        rec, answer = await send(client, url, body, index=first_index + turn, t0=t0, timeout_s=timeout_s)
        rec.update(conversation=number, turn=None if number is None else turn)
        records.append(rec)
        on_done(rec)
        if rec["status"] != "ok":
            # Without a finished answer there is no history to send; the turns left
            # count as errors so the workload's shortfall shows in the counts.
            for later in range(turn + 1, conv.turns):
                gone = _record(first_index + later, time.perf_counter() - t0)
                gone.update(status="error", error=f"not sent: turn {turn} of this conversation did not finish",
                            conversation=number, turn=later)
                records.append(gone)
                on_done(gone)
            break
    return records


async def _run(url: str, conversations: list[Conversation], arrival: Arrival, *, timeout_s: float,
               on_done: Callable[[dict], None], transport: httpx.AsyncBaseTransport | None, send
               ) -> tuple[list[dict], float]:
    limits = httpx.Limits(max_connections=max(arrival.concurrency, 64), max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, transport=transport) as client:
        offsets = arrival.offsets(len(conversations))
        gate = asyncio.Semaphore(arrival.concurrency if offsets is None else len(conversations) or 1)
        multi_turn = any(c.turns > 1 for c in conversations)
        # Indices are fixed by position, not completion order, so a record names its request.
        first = [sum(c.turns for c in conversations[:i]) for i in range(len(conversations))]
        t0 = time.perf_counter()

        async def one(i: int, conv: Conversation) -> list[dict]:
            if offsets is not None:
                await asyncio.sleep(max(0.0, t0 + offsets[i] - time.perf_counter()))
            async with gate:
                # Inside the gate, so a later client cannot take a ramping client's place early.
                if offsets is None and arrival.ramp_s > 0 and i < arrival.concurrency:
                    await asyncio.sleep(max(0.0, t0 + i * arrival.ramp_s / arrival.concurrency - time.perf_counter()))
                return await run_conversation(client, url, conv, first_index=first[i],
                                              number=i if multi_turn else None, t0=t0,
                                              timeout_s=timeout_s, on_done=on_done, send=send)

        per_conversation = await asyncio.gather(*(one(i, c) for i, c in enumerate(conversations)))
        return [rec for recs in per_conversation for rec in recs], time.perf_counter() - t0


def run_conversations(base_url: str, conversations: list[Conversation], arrival: Arrival, *,
                      timeout_s: float = 600, on_done: Callable[[dict], None] = lambda rec: None,
                      transport: httpx.AsyncBaseTransport | None = None,
                      endpoint: str = "chat") -> tuple[list[dict], float]:
    """Run every conversation (turns in order, conversations under `arrival`); return (records, wall seconds)."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
    path, send = ENDPOINTS[endpoint]
    if endpoint != "chat" and any(c.turns > 1 for c in conversations):
        raise ValueError(f"{endpoint} requests have no turns to continue")
    return asyncio.run(_run(base_url.rstrip("/") + path, list(conversations), arrival, timeout_s=timeout_s,
                            on_done=on_done, transport=transport, send=send))


def run_load(base_url: str, bodies: list[dict], arrival: Arrival, *, timeout_s: float = 600,
             on_done: Callable[[dict], None] = lambda rec: None,
             transport: httpx.AsyncBaseTransport | None = None, endpoint: str = "chat") -> tuple[list[dict], float]:
    """Send every body to `endpoint` (streamed chat by default); return (records, wall seconds)."""
    return run_conversations(base_url, [Conversation(b) for b in bodies], arrival, timeout_s=timeout_s,
                             on_done=on_done, transport=transport, endpoint=endpoint)
