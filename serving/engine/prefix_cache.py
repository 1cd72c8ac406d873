"""Reuse the KV cache of the longest cached prefix of a prompt.

A thin policy layer over mlx-lm's LRUPromptCache (a token trie with LRU
eviction): a byte budget, hit/miss accounting, and the one edge case the
batch generator cannot take, a prompt that is entirely cached.
Used only on the engine thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

MODEL_KEY = "served-model"  # one model per server: the trie needs some key
MAX_ENTRIES = 512


@dataclass
class Lookup:
    cache: list[Any] | None  # a private copy of the cached KV state, or None on a miss
    rest: list[int]  # the prompt tokens still to prefill
    cached_tokens: int


def _default_store(max_bytes: int):
    from mlx_lm.models.cache import LRUPromptCache

    return LRUPromptCache(max_size=MAX_ENTRIES, max_bytes=max_bytes)


def _default_trim(cache: list[Any], n: int) -> bool:
    from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

    if not can_trim_prompt_cache(cache):
        return False
    trim_prompt_cache(cache, n)
    return True


class PrefixCache:
    def __init__(self, max_bytes: int, *, store_factory: Callable[[int], Any] = _default_store,
                 trim: Callable[[list[Any], int], bool] = _default_trim) -> None:
        self.max_bytes = max_bytes
        self._store = store_factory(max_bytes) if max_bytes > 0 else None
        self._trim = trim
        self.hit_tokens = 0
        self.miss_tokens = 0
        self.lookups = 0
        self.hits = 0

    @property
    def enabled(self) -> bool:
        return self._store is not None

    def lookup(self, tokens: list[int]) -> Lookup:
        self.lookups += 1
        cache, rest = (None, list(tokens))
        if self._store is not None:
            cache, rest = self._store.fetch_nearest_cache(MODEL_KEY, list(tokens))
            if cache is not None and not rest:
                # The generator needs at least one token to prefill: give the last back.
                cache, rest = (cache, list(tokens[-1:])) if self._trim(cache, 1) else (None, list(tokens))
        cached = len(tokens) - len(rest)
        self.hit_tokens += cached
        self.miss_tokens += len(rest)
        self.hits += cached > 0
        return Lookup(cache if cached else None, list(rest), cached)

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        if self._store is not None and tokens and cache:
            self._store.insert_cache(MODEL_KEY, list(tokens), cache)

    def stats(self) -> dict:
        return {
            "enabled": self.enabled,
            "max_bytes": self.max_bytes,
            "bytes": self._store.nbytes if self._store is not None else 0,
            "entries": len(self._store) if self._store is not None else 0,
            "lookups": self.lookups,
            "hits": self.hits,
            "misses": self.lookups - self.hits,
            "hit_tokens": self.hit_tokens,
            "miss_tokens": self.miss_tokens,
        }
