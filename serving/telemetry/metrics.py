"""The Prometheus metrics of one app, on a registry that app owns.

Request-side metrics are updated as requests are served; engine-side ones are
read from `engine.stats()` at scrape time by a collector, so the engine keeps
no Prometheus objects and its thread never waits on them.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .divergence_metrics import divergence_families

log = logging.getLogger("mlx_proof.telemetry")

PREFIX = "mlx_proof_"

# 5 ms .. 60 s: a GPU's first token to a CPU's long prefill (SmolLM2 on 2 cores: ~2.5 s TTFT at c=10).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# Inter-token gaps: ~5 ms on an H100, ~230 ms on this CPU at c=10, seconds when a prefill stalls a batch.
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
# Whole requests run up to --request-timeout (600 s by default).
DURATION_BUCKETS = (*LATENCY_BUCKETS, 120.0, 300.0, 600.0)

TOKEN_KINDS = ("prompt", "cached", "completion")


class Metrics:
    """The request-side metrics; labels are route templates, never raw paths."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(f"{PREFIX}requests", "HTTP requests answered, by route, method and status",
                                ("route", "method", "status"), registry=registry)
        self.in_flight = Gauge(f"{PREFIX}requests_in_flight",
                               "requests being served (a stream counts until it ends)", registry=registry)
        self.duration = Histogram(f"{PREFIX}request_duration_seconds",
                                  "end-to-end time of a request, to the last byte of a stream",
                                  ("route", "method"), buckets=DURATION_BUCKETS, registry=registry)
        self.tokens = Counter(f"{PREFIX}tokens", "tokens by route and kind (prompt, cached: the part of the "
                              "prompt served from the prefix cache, completion)", ("route", "kind"),
                              registry=registry)
        self.ttft = Histogram(f"{PREFIX}time_to_first_token_seconds",
                              "from a request's arrival to its first generated token",
                              ("route",), buckets=LATENCY_BUCKETS, registry=registry)
        self.itl = Histogram(f"{PREFIX}inter_token_latency_seconds",
                             "gap between consecutive generated tokens of one request",
                             ("route",), buckets=ITL_BUCKETS, registry=registry)
        self.finishes = Counter(f"{PREFIX}finish_reasons", "generations by how they ended "
                                "(eos, stop, length, tool_calls, cancelled, error, timeout)",
                                ("route", "reason"), registry=registry)
        # The divergence monitor's status is read at scrape time, like the engine's
        # (EngineCollector, through divergence_metrics).


# stats() key -> (metric name, help); counters are monotonic in the engine already.
_ENGINE_GAUGES = (
    ("queue_depth", "engine_queue_depth", "requests submitted and waiting for a decode slot"),
    ("decoding", "engine_batch_size", "sequences decoding together right now"),
    ("max_concurrency", "engine_max_concurrency", "most sequences that may decode together"),
)
_ENGINE_COUNTERS = (
    ("steps", "engine_steps", "decode steps run"),
    ("generated_tokens", "engine_generated_tokens", "tokens generated, all requests"),
    ("rejected_busy", "engine_rejected_busy", "requests refused with 429 because the queue was full"),
    ("timeouts", "engine_timeouts", "requests that ran out of --request-timeout"),
    ("errors", "engine_errors", "sequences failed by an engine error"),
)
_CACHE_GAUGES = (
    ("bytes", "prefix_cache_bytes", "bytes of KV cache kept for prefix reuse"),
    ("entries", "prefix_cache_entries", "cached prompts"),
)
_CACHE_COUNTERS = (
    ("hits", "prefix_cache_hits", "prompts that started from a cached prefix"),
    ("misses", "prefix_cache_misses", "prompts that found no cached prefix"),
    ("hit_tokens", "prefix_cache_hit_tokens", "prompt tokens served from the cache"),
    ("miss_tokens", "prefix_cache_miss_tokens", "prompt tokens that had to be prefilled"),
)
_LOOKUP_COUNTERS = (
    ("steps", "lookup_steps", "prompt-lookup verifying forwards (one greedy sequence decoding alone)"),
    ("drafted", "lookup_drafted_tokens", "tokens drafted from the prompt and answer into those forwards"),
    ("accepted", "lookup_accepted_tokens", "drafted tokens greedy decoding kept"),
)


class EngineCollector:
    """Reads the engine's own counters when Prometheus scrapes."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def collect(self):
        try:
            stats = self.engine.stats()
        except Exception:  # a scrape must never fail because the engine is unwell
            log.exception("engine stats unavailable for /metrics")
            stats = {"alive": False}
        yield GaugeMetricFamily(f"{PREFIX}engine_up", "1 while the engine takes new work",
                                value=1.0 if stats.get("alive") else 0.0)
        yield from _families(stats, _ENGINE_GAUGES, _ENGINE_COUNTERS)
        cache = stats.get("prefix_cache")
        if isinstance(cache, dict):
            yield from _families(cache, _CACHE_GAUGES, _CACHE_COUNTERS)
        lookup = stats.get("lookup_decoding")
        if isinstance(lookup, dict) and lookup.get("enabled"):
            yield from _families(lookup, (), _LOOKUP_COUNTERS)
        yield from divergence_families(stats)


def _families(stats: dict, gauges, counters):
    for key, name, doc in gauges:
        if isinstance(stats.get(key), (int, float)):
            yield GaugeMetricFamily(PREFIX + name, doc, value=float(stats[key]))
    for key, name, doc in counters:
        if isinstance(stats.get(key), (int, float)):
            yield CounterMetricFamily(PREFIX + name, doc, value=float(stats[key]))


def build_registry(engine) -> tuple[CollectorRegistry, Metrics]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    registry.register(EngineCollector(engine))
    return registry, metrics
