"""PrefixCache over mlx-lm's real LRUPromptCache and KV caches (tiny arrays, no model)."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from serving.engine.prefix_cache import PrefixCache


def kv(n: int) -> list[KVCache]:
    cache = KVCache()
    cache.update_and_fetch(mx.zeros((1, 1, n, 4)), mx.zeros((1, 1, n, 4)))
    return [cache]


def test_disabled_cache_misses_everything():
    pc = PrefixCache(0)
    hit = pc.lookup([1, 2, 3])
    assert (hit.cache, hit.rest, hit.cached_tokens) == (None, [1, 2, 3], 0)
    pc.store([1, 2, 3], kv(3))
    assert pc.stats()["entries"] == 0 and pc.stats()["miss_tokens"] == 3


def test_longest_prefix_is_reused_and_counted():
    pc = PrefixCache(1 << 20)
    pc.store([1, 2, 3, 4, 5], kv(5))
    hit = pc.lookup([1, 2, 3, 9])
    assert hit.cached_tokens == 3 and hit.rest == [9]
    assert hit.cache[0].offset == 3  # trimmed to the shared prefix, a private copy
    stats = pc.stats()
    assert (stats["hits"], stats["hit_tokens"], stats["miss_tokens"]) == (1, 3, 1)


def test_an_entirely_cached_prompt_leaves_one_token_to_prefill():
    pc = PrefixCache(1 << 20)
    pc.store([1, 2, 3], kv(3))
    hit = pc.lookup([1, 2, 3])
    assert hit.rest == [3] and hit.cached_tokens == 2 and hit.cache[0].offset == 2


def test_byte_budget_evicts_least_recently_used():
    one = sum(c.nbytes for c in kv(8))
    pc = PrefixCache(int(one * 2.5))
    for start in (10, 20, 30):
        pc.store(list(range(start, start + 8)), kv(8))
    stats = pc.stats()
    assert stats["entries"] == 2 and stats["bytes"] <= pc.max_bytes
    assert pc.lookup(list(range(10, 18)) + [99]).cached_tokens == 0  # the oldest went first
