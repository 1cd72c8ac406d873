"""--deterministic and the batch-divergence monitor on real servers (the real default model),
driven by the official openai SDK.

On this CPU batched and serial decoding agree anyway (FACTS.md), so what the first test can
show here is the plumbing: identical token ids alone and among concurrent requests, with the
engine never decoding two sequences at once (peak_decoding 1), and temperature > 0 refused.
"""

from __future__ import annotations

import concurrent.futures
import sys
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.sut import free_port, launched

from .conftest import DEFAULT_MODEL

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]
DISTRACTORS = [
    "Say hello.",
    "Write one sentence about the sea, the wind, and a small boat that sails at dawn.",
    "List four fruits that are red, and say which one you like best and why, in two sentences.",
]


def serve(tmp_path_factory, name: str, *flags: str):
    port = free_port()
    argv = [sys.executable, "-m", "serving", "serve", "--model", DEFAULT_MODEL, "--port", str(port),
            "--max-concurrency", "8", *flags]
    return launched(argv, port=port, log_path=tmp_path_factory.mktemp(name) / "server.log", ready_timeout_s=1800)


def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)


def token_ids(client: openai.OpenAI, content: str | None = None, max_tokens: int = 12) -> list[int]:
    messages = QUESTION if content is None else [{"role": "user", "content": content}]
    r = client.chat.completions.create(model=DEFAULT_MODEL, messages=messages, max_tokens=max_tokens,
                                       extra_body={"return_token_ids": True})
    ids = r.model_dump()["choices"][0]["token_ids"]
    assert ids, "the server returned no token ids"
    return ids


def scrape(base_url: str) -> dict[tuple[str, tuple], float]:
    r = httpx.get(base_url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_deterministic_gives_the_same_token_ids_alone_and_among_concurrent_requests(tmp_path_factory):
    with serve(tmp_path_factory, "deterministic", "--deterministic") as server:
        client = sdk(server)
        alone = token_ids(client)
        with concurrent.futures.ThreadPoolExecutor(len(DISTRACTORS) + 1) as pool:
            others = [pool.submit(token_ids, client, d, 16) for d in DISTRACTORS[:2]]
            time.sleep(0.5)  # the probe request arrives while others are decoding or queued
            crowded = pool.submit(token_ids, client)
            others.append(pool.submit(token_ids, client, DISTRACTORS[2], 16))
            assert all(len(f.result()) > 0 for f in others)
            assert crowded.result() == alone
        engine = server.health()["engine"]
        assert engine["mode"] == "serial-greedy" and engine["serial_decoding"] is True
        assert engine["peak_decoding"] == 1 and engine["requests"] == 5
        assert engine["prefix_cache"]["enabled"] is False
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, max_tokens=4, temperature=0.7)
        assert refused.value.body["param"] == "temperature" and refused.value.body["code"] == "deterministic_mode"


def logprobs_of(client: openai.OpenAI, content: str | None = None, max_tokens: int = 12):
    messages = QUESTION if content is None else [{"role": "user", "content": content}]
    r = client.chat.completions.create(model=DEFAULT_MODEL, messages=messages, max_tokens=max_tokens,
                                       logprobs=True, extra_body={"return_token_ids": True})
    choice = r.model_dump()["choices"][0]
    return choice["token_ids"], [t["logprob"] for t in choice["logprobs"]["content"]]


def test_batch_invariant_gives_identical_tokens_and_logprobs_alone_and_batched(tmp_path_factory):
    with serve(tmp_path_factory, "batch-invariant", "--batch-invariant", "--batch-invariant-context", "256") as server:
        client = sdk(server)
        alone = logprobs_of(client)
        with concurrent.futures.ThreadPoolExecutor(len(DISTRACTORS) + 1) as pool:
            others = [pool.submit(logprobs_of, client, d, 24) for d in DISTRACTORS]
            time.sleep(0.5)  # arrives while the others decode
            crowded = pool.submit(logprobs_of, client)
            assert all(len(f.result()[0]) > 0 for f in others)
            assert crowded.result() == alone  # token ids, and log-probabilities to the last bit
        engine = server.health()["engine"]
        assert engine["mode"] == "batch-invariant" and engine["serial_decoding"] is False
        assert engine["peak_decoding"] >= 2 and engine["prefix_cache"]["enabled"] is False
        with pytest.raises(openai.BadRequestError) as refused:  # the fixed KV buffer is the context
            client.chat.completions.create(model=DEFAULT_MODEL, max_tokens=4,
                                           messages=[{"role": "user", "content": "word " * 400}])
        assert refused.value.body["code"] == "context_length_exceeded"


def test_compiled_decode_step_serves_a_crowd_with_the_tokens_it_gives_alone(tmp_path_factory):
    """--decode-step compiled: rows and KV length change with the crowd (1 → 4 rows here). On this
    CPU every shape sums alike (FACTS.md), so alone and crowded tokens must agree; on a GPU they
    may not, which the divergence suite measures. The crowded request repeats the first one's
    prompt, so it starts from the prefix cache, which the compiled step keeps."""
    with serve(tmp_path_factory, "compiled", "--decode-step", "compiled", "--compiled-step-context", "256") as server:
        client = sdk(server)
        alone = token_ids(client)
        with concurrent.futures.ThreadPoolExecutor(len(DISTRACTORS) + 1) as pool:
            others = [pool.submit(token_ids, client, d, 24) for d in DISTRACTORS]
            time.sleep(0.5)
            crowded = pool.submit(token_ids, client)
            assert all(len(f.result()) > 0 for f in others)
            assert crowded.result() == alone
        stream = client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, max_tokens=6, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        engine = server.health()["engine"]
        assert engine["mode"] == "continuous-batching-compiled" and engine["peak_decoding"] >= 2
        assert engine["prefix_cache"]["enabled"] is True and engine["prefix_cache"]["hit_tokens"] > 0
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=DEFAULT_MODEL, max_tokens=4,
                                           messages=[{"role": "user", "content": "word " * 400}])
        assert refused.value.body["code"] == "context_length_exceeded"


def test_divergence_monitor_reports_a_probe_in_health_and_metrics(tmp_path_factory):
    with serve(tmp_path_factory, "monitor", "--divergence-monitor", "warn", "--divergence-probe-interval", "1",
               "--divergence-probe-tokens", "8") as server:
        before = server.health()["engine"]["divergence_monitor"]
        assert before["action"] == "warn" and before["status"] == "unknown" and before["probes"] == 0
        assert len(before["reference"]["tokens"]) > 0  # decoded alone at startup
        time.sleep(1.2)  # a probe is due; it waits for traffic to be batched with
        client = sdk(server)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda d: token_ids(client, d, 24), DISTRACTORS[1:]))
        monitor = server.health()["engine"]["divergence_monitor"]
        assert monitor["probes"] >= 1, monitor
        assert monitor["status"] in ("ok", "warning")
        assert (monitor["status"] == "warning") == (monitor["divergences"] > 0)
        assert monitor["last_probe"]["max_batch_size"] >= 2 and monitor["last_probe_at"].endswith("Z")
        metrics = scrape(server.base_url)
        assert metrics[("mlx_proof_divergence_monitor_status", (("status", monitor["status"]),))] == 1
        assert metrics[("mlx_proof_divergence_monitor_status", (("status", "unknown"),))] == 0
        assert metrics[("mlx_proof_divergence_probes_total", ())] >= 1
        assert metrics[("mlx_proof_divergence_last_probe_timestamp_seconds", ())] > 1.6e9
        assert metrics[("mlx_proof_engine_serial_decoding", ())] == 0
