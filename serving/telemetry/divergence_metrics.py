"""The batch-divergence monitor and serial decoding, as Prometheus families read at scrape time
from `engine.stats()` (its "divergence_monitor" block and "serial_decoding")."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "mlx_proof_"
STATES = ("off", "unknown", "ok", "warning")


def divergence_families(stats: dict):
    if isinstance(stats.get("serial_decoding"), bool):
        yield GaugeMetricFamily(f"{PREFIX}engine_serial_decoding",
                                "1 while the engine decodes one sequence at a time (--deterministic, or the "
                                "divergence monitor's serialize action after a divergence)",
                                value=1.0 if stats["serial_decoding"] else 0.0)
    status = stats.get("divergence_monitor")
    if not isinstance(status, dict):
        return
    state = GaugeMetricFamily(f"{PREFIX}divergence_monitor_status",
                              "1 for the monitor's current status: off, unknown (no probe yet), ok, warning",
                              labels=("status",))
    for name in STATES:
        state.add_metric((name,), 1.0 if status.get("status") == name else 0.0)
    yield state
    counters = (
        ("probes", "divergence_probes", "probes decoded inside a batch and compared with the serial reference"),
        ("divergences", "divergence_divergences", "probes whose greedy tokens differed from the serial reference"),
        ("inconclusive", "divergence_probes_inconclusive",
         "probes that ended up decoding alone or were cut short, so proved nothing"),
    )
    for key, name, doc in counters:
        yield CounterMetricFamily(PREFIX + name, doc, value=float(status.get(key) or 0))
    reference = status.get("reference") or {}
    yield CounterMetricFamily(f"{PREFIX}divergence_reference_mismatches",
                              "serial re-checks of the probe that no longer matched the startup reference",
                              value=float(reference.get("mismatches") or 0))
    yield GaugeMetricFamily(f"{PREFIX}divergence_last_probe_timestamp_seconds",
                            "Unix time of the last conclusive probe (0: none yet)",
                            value=float(status.get("last_probe_unix") or 0))
    last = status.get("last_divergence") or {}
    index = last.get("first_divergent_index")
    yield GaugeMetricFamily(f"{PREFIX}divergence_first_divergent_index",
                            "token index where the last divergent probe first differed (-1: no divergence)",
                            value=float(-1 if index is None else index))
    if last.get("margin") is not None:
        yield GaugeMetricFamily(f"{PREFIX}divergence_margin",
                                "last divergence: logprob of the batched run's token minus the serial "
                                "reference's token, in the batched distribution (near 0: a near-tie)",
                                value=float(last["margin"]))
    probe = status.get("last_probe") or {}
    if probe.get("max_logprob_delta") is not None:
        yield GaugeMetricFamily(f"{PREFIX}divergence_max_logprob_delta",
                                "last probe: largest |logprob change| of a token that still matched",
                                value=float(probe["max_logprob_delta"]))
