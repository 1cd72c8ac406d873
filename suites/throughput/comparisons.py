"""Which server pairs bench compares on throughput: like against like, by prompt-cache state."""

from __future__ import annotations

from harness.metrics import Comparison

BENCH_METRICS = ("output_tok_per_s", "ttft_p50_s")
_CACHE_LABEL = {("on", "on"): "warm", ("off", "off"): "cold", ("on", "off"): "warm-vs-cold",
                ("off", "on"): "cold-vs-warm"}


def cache_label(a: str, b: str) -> str:
    return _CACHE_LABEL.get((a, b), "unknown")


def setup_label(peer: dict) -> str | None:
    """Which figure a comparison with this peer is: engine-vs-engine when it computed with our BLAS,
    as-shipped when it ran without it; None for a manifest entry from before harness 0.7.0."""
    setup = (peer.get("blas") or {}).get("setup")
    return {"same-as-ours": "engine-vs-engine", "as-shipped": "as-shipped"}.get(setup)


def bench_comparisons(servers: list[dict], *, metrics: tuple[str, ...] = BENCH_METRICS) -> list[Comparison]:
    """Like against like, then the cache's own effect, among the servers that ran.

    Each of ours (kind mlx-proof) is compared with each peer whose prompt cache
    is in the same state (warm with warm, cold with cold): a warm cache against
    a cold one would credit the cache to the server. Then ours with the cache on
    against ours with it off. An "unknown" state (a server that cannot say)
    is compared with every peer, as before the state was recorded. Each comparison with a
    peer is labelled engine-vs-engine or as-shipped (setup_label).
    """
    ran = [s for s in servers if s["status"] == "ran"]
    ours = [s for s in ran if s["kind"] == "mlx-proof"]
    peers = [s for s in ran if s["kind"] != "mlx-proof"]
    state = {s["label"]: s.get("prefix_cache", "unknown") for s in ran}
    out = []
    for a in ours:
        for b in peers:
            sa, sb = state[a["label"]], state[b["label"]]
            if sa == sb or "unknown" in (sa, sb):
                out.append(Comparison("*", a["label"], b["label"], metrics, cache_label(sa, sb), setup_label(b)))
    for a in ours:
        for b in ours:
            if (state[a["label"]], state[b["label"]]) == ("on", "off"):
                out.append(Comparison("*", a["label"], b["label"], metrics, "warm-vs-cold"))
    return out
