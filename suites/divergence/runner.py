"""The divergence runner: one run of the protocol against a server, over HTTP only.

Per run, for every prompt of the case:
1. reference: the prompt alone, greedy (temperature 0);
2. batch: for each batch size c, the prompt sent at the same moment as c - 1 distractors,
   at a position that rotates with the prompt, so the server batches them together;
3. control: the prompt alone again, after all the batches: serial against serial, the noise floor.

Each generation asks the OpenAI chat endpoint for its token ids (`return_token_ids`, the
vLLM extension our server implements) and for each step's top-2 log-probabilities. Every
generation except the reference is compared with the run's reference (compare.match).
"""

from __future__ import annotations

import asyncio
import time

import httpx

from .cases import Case, Distractor, Prompt
from .compare import margin, match

CHAT_PATH = "/v1/chat/completions"


def body(text: str, max_tokens: int, *, model: str | None) -> dict:
    out = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "temperature": 0.0,
           "logprobs": True, "top_logprobs": 2, "return_token_ids": True}
    if model is not None:
        out["model"] = model
    return out


def _error(message: str, *, status: int | None = None, latency: float | None = None) -> dict:
    return {"status": "error", "error": message[:500], "http_status": status, "latency_s": latency,
            "finish_reason": None, "prompt_tokens": None, "token_ids": [], "logprobs": [], "margins": []}


def parse(data: dict, *, latency: float) -> dict:
    """A sample from a whole chat completion: ids, the chosen tokens' logprobs and top-2 margins."""
    choice = (data.get("choices") or [{}])[0]
    ids = choice.get("token_ids")
    if not isinstance(ids, list):
        return _error("the response has no choices[0].token_ids: the server does not return token ids "
                      "(return_token_ids)", status=200, latency=latency)
    content = (choice.get("logprobs") or {}).get("content") or []
    return {"status": "ok", "error": None, "http_status": 200, "latency_s": latency,
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": (data.get("usage") or {}).get("prompt_tokens"),
            "token_ids": [int(t) for t in ids], "logprobs": [float(e["logprob"]) for e in content],
            "margins": [margin(e.get("top_logprobs") or []) for e in content]}


async def generate(client: httpx.AsyncClient, url: str, payload: dict, *, timeout_s: float) -> dict:
    sent = time.perf_counter()
    try:
        resp = await client.post(url, json=payload, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return _error(f"{type(exc).__name__}: {exc}", latency=time.perf_counter() - sent)
    latency = time.perf_counter() - sent
    if resp.status_code != 200:
        return _error(f"HTTP {resp.status_code}: {resp.text[:300]}", status=resp.status_code, latency=latency)
    try:
        return parse(resp.json(), latency=latency)
    except (ValueError, KeyError, TypeError) as exc:
        return _error(f"unreadable response: {type(exc).__name__}: {exc}", status=200, latency=latency)


def distractors_for(pool: tuple[Distractor, ...], prompt_index: int, n: int) -> list[Distractor]:
    """n distractors, rotating through the pool so every prompt meets a different mix of lengths."""
    start = prompt_index * max(n, 1)
    return [pool[(start + j) % len(pool)] for j in range(n)]


def record(sample: dict, *, prompt: Prompt, condition: str, batch_size: int, reference: dict | None,
           position: int = 0, distractors: list[str] | None = None, distractor_errors: int = 0) -> dict:
    """One raw "divergence" record; `match` is null for the reference and wherever either side failed."""
    compared = reference is not None and reference["status"] == "ok" and sample["status"] == "ok"
    return {"type": "divergence", "prompt": prompt.id, "set": prompt.set, "condition": condition,
            "batch_size": batch_size, "position": position, "distractors": distractors or [],
            "distractor_errors": distractor_errors, **sample,
            "match": match(reference, sample) if compared else None}


async def _batch(client, url: str, case: Case, prompt: Prompt, index: int, size: int, *, model: str | None,
                 reference: dict) -> dict:
    company = distractors_for(case.distractors, index, size - 1)
    position = index % size
    payloads = [body(d.text, max(d.max_tokens, prompt.max_tokens), model=model) for d in company]
    payloads.insert(position, body(prompt.text, prompt.max_tokens, model=model))
    # Sent together on separate connections: the server sees `size` requests at once.
    samples = await asyncio.gather(*(generate(client, url, p, timeout_s=case.timeout_s) for p in payloads))
    errors = sum(s["status"] != "ok" for i, s in enumerate(samples) if i != position)
    return record(samples[position], prompt=prompt, condition="batch", batch_size=size, reference=reference,
                  position=position, distractors=[d.id for d in company], distractor_errors=errors)


async def run_protocol(base_url: str, case: Case, *, model: str | None,
                       transport: httpx.AsyncBaseTransport | None = None) -> list[dict]:
    """Every record of one run, in the order sent (without server/case/repeat tags)."""
    url = base_url.rstrip("/") + CHAT_PATH
    biggest = max(case.concurrency, default=1)
    limits = httpx.Limits(max_connections=biggest + 2, max_keepalive_connections=biggest + 2)
    async with httpx.AsyncClient(limits=limits, transport=transport) as client:
        async def alone(prompt: Prompt) -> dict:
            return await generate(client, url, body(prompt.text, prompt.max_tokens, model=model),
                                  timeout_s=case.timeout_s)

        references, records = {}, []
        for prompt in case.prompts:
            references[prompt.id] = await alone(prompt)
            records.append(record(references[prompt.id], prompt=prompt, condition="reference", batch_size=1,
                                  reference=None))
        for size in case.concurrency:
            for i, prompt in enumerate(case.prompts):
                records.append(await _batch(client, url, case, prompt, i, size, model=model,
                                            reference=references[prompt.id]))
        if case.control:
            for prompt in case.prompts:
                records.append(record(await alone(prompt), prompt=prompt, condition="control", batch_size=1,
                                      reference=references[prompt.id]))
    return records


def warm_up(target, case: Case, requests: int) -> None:
    """The first prompts alone, unrecorded: the first generations load kernels and caches."""
    async def go():
        url = target.server.base_url.rstrip("/") + CHAT_PATH
        async with httpx.AsyncClient() as client:
            for prompt in case.prompts[: max(requests, 1)]:
                await generate(client, url, body(prompt.text, prompt.max_tokens, model=target.model_field),
                               timeout_s=case.timeout_s)
    asyncio.run(go())


def run(target, case: Case, repeat: int) -> list[dict]:
    records = asyncio.run(run_protocol(target.server.base_url, case, model=target.model_field))
    tag = {"server": target.spec.label, "case": case.name, "repeat": repeat}
    return [{"type": r["type"], **tag, **r} for r in records]
