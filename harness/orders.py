"""The order in which servers run within each repeat: balanced for any number of servers and repeats.

A server's place in the sequence (first after a pause, or right after another
server) measurably changes its speed on a shared machine, so no server may hold
one place more often than another:

- when the repeats are a multiple of k! (k servers), every order runs equally
  often, in shuffled blocks of k! so slow drift cannot line up with one order;
- otherwise the whole blocks come first, then the remaining repeats take rows of
  random cyclic Latin squares: every server holds every position equally often
  over each square, and within one of the others over a partial one.

Launch order matters too, and it is not undone by interleaving: on the 2-core CI machine the
server started first ran 2–5% slower than identical servers started after it, for the whole
run (A/A runs with three identical servers; reversing the start order moved the penalty with
it). So the repeats are cut into launch blocks: the servers are stopped and started afresh
for each block, in launch orders taken from random cyclic Latin squares, so over each k
blocks every server is started first, second, … once, and a launch penalty falls on every
server alike instead of on one.

The design (method, seed, each repeat's order, each block's launch order) is recorded in the
manifest.
"""

from __future__ import annotations

import itertools
import math
import random
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

EVERY_ORDER = "every order equally often"
BALANCED = "balanced randomised"


@dataclass(frozen=True)
class Launch:
    first_repeat: int  # the block runs repeats first_repeat .. the next block's first_repeat - 1
    order: tuple[str, ...]  # the order its servers are started in


@dataclass(frozen=True)
class Design:
    method: str
    seed: int
    orders: tuple[tuple[str, ...], ...]  # one per repeat, in repeat order
    launches: tuple[Launch, ...]  # the launch blocks, in repeat order

    def describe(self) -> dict:
        """The manifest's workload.design."""
        return {"method": self.method, "seed": self.seed, "orders": [list(o) for o in self.orders],
                "launches": [{"first_repeat": b.first_repeat, "order": list(b.order)} for b in self.launches]}

    def blocks(self) -> list[tuple[tuple[str, ...], range]]:
        """(launch order, repeats) per launch block."""
        ends = [b.first_repeat for b in self.launches[1:]] + [len(self.orders)]
        return [(b.order, range(b.first_repeat, end)) for b, end in zip(self.launches, ends)]

    def interleaving(self) -> str:
        """The manifest's workload.interleaving, in words."""
        if len({len(o) for o in self.orders}) == 1 and len(self.orders[0]) == 1:
            return "one server: its repeats one after another"
        if len(self.launches) > 1:
            return (f"{self._interleaving()}; the servers are started afresh for each of {len(self.launches)} "
                    f"launch blocks, in start orders from random cyclic Latin squares (workload.design.launches)")
        return self._interleaving()

    def _interleaving(self) -> str:
        k = len(self.orders[0])
        if self.method == EVERY_ORDER:
            return (f"each repeat runs every server once; every one of the {math.factorial(k)} server orders runs "
                    f"equally often, shuffled in blocks (seed {self.seed}; orders in workload.design)")
        return (f"each repeat runs every server once; {len(self.orders)} repeats cannot hold each of the "
                f"{math.factorial(k)} orders equally often, so: whole shuffled blocks of every order, then rows of "
                f"random cyclic Latin squares, every server in every position within one time of the others "
                f"(balanced randomised design, seed {self.seed}; orders in workload.design)")


def _latin_rows(labels: Sequence[str], n: int, rng: random.Random) -> list[tuple[str, ...]]:
    """n rows taken from random cyclic Latin squares, one square at a time, unused orders first."""
    k, rows, used = len(labels), [], set()
    while len(rows) < n:
        base = list(labels)
        rng.shuffle(base)
        square = [tuple(base[i:] + base[:i]) for i in range(k)]
        rng.shuffle(square)
        square.sort(key=lambda row: row in used)  # stable: still random within each kind
        take = square[: min(k, n - len(rows))]
        rows += take
        used.update(take)
    return rows


def balanced_orders(labels: Sequence[str], repeats: int, *, seed: int | None = None,
                    launches: int = 1) -> Design:
    """Each repeat's server order, and `launches` launch blocks of (nearly) equal length, each
    with its own start order; `seed` None draws one (it is recorded either way)."""
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"server labels must be distinct: {labels}")
    if repeats < 1 or not labels:
        raise ValueError("need at least one server and one repeat")
    seed = secrets.randbits(32) if seed is None else seed
    rng = random.Random(seed)
    every = list(itertools.permutations(labels))
    blocks, rest = divmod(repeats, len(every))
    orders: list[tuple[str, ...]] = []
    for _ in range(blocks):
        block = every[:]
        rng.shuffle(block)
        orders += block
    orders += _latin_rows(labels, rest, rng)
    if not 1 <= launches <= repeats:
        raise ValueError(f"launch blocks must be between 1 and the {repeats} repeats, not {launches}")
    # One launch keeps the servers' own order (ours first: peers take our BLAS from its /health).
    starts = [tuple(labels)] if launches == 1 else _latin_rows(labels, launches, rng)
    blocks = tuple(Launch(b * repeats // launches, order) for b, order in enumerate(starts))
    return Design(EVERY_ORDER if rest == 0 else BALANCED, seed, tuple(orders), blocks)


def position_counts(orders: Sequence[Sequence[str]]) -> Counter:
    """(server, position) → how many repeats put that server in that position."""
    return Counter((label, i) for order in orders for i, label in enumerate(order))
