"""Smooth weighted round-robin (nginx's algorithm), and the rules a routed set must obey.

Smooth means the picks of a 5/1/1 split interleave (a a b a c a a), instead of sending five
requests in a row to one backend: a canary at 10 % sees one request in ten, evenly spread.
The sequence repeats every sum(weights) picks, so for the usual small weights it is computed
once per routed set and a pick is then an index into a list.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd
from typing import Generic, TypeVar

from corral.router.protocol import Backend

T = TypeVar("T")

# Longest precomputed cycle; heavier weight sums are picked on the fly (O(backends) per pick).
_MAX_CYCLE = 10_000


class SmoothWeighted(Generic[T]):
    """Picks items in proportion to their weights; items of weight 0 are never picked."""

    __slots__ = ("_current", "_cycle", "_items", "_pos", "_total", "_weights")

    def __init__(self, weighted: Sequence[tuple[T, int]]) -> None:
        pairs = [(item, weight) for item, weight in weighted if weight > 0]
        divisor = 0
        for _, weight in pairs:
            divisor = gcd(divisor, weight)
        self._items = [item for item, _ in pairs]
        self._weights = [weight // divisor for _, weight in pairs] if pairs else []
        self._total = sum(self._weights)
        self._current = [0] * len(self._items)
        self._pos = 0
        self._cycle: list[T] | None = None
        if 0 < self._total <= _MAX_CYCLE:
            self._cycle = [self._step() for _ in range(self._total)]

    def __len__(self) -> int:
        return len(self._items)

    def pick(self) -> T | None:
        cycle = self._cycle
        if cycle is not None:
            pos = self._pos
            self._pos = pos + 1 if pos + 1 < self._total else 0
            return cycle[pos]
        if not self._items:
            return None
        return self._step()

    def _step(self) -> T:
        current = self._current
        best = 0
        for index, weight in enumerate(self._weights):
            current[index] += weight
            if current[index] > current[best]:
                best = index
        current[best] -= self._total
        return self._items[best]


def check_backends(backends: Sequence[Backend]) -> None:
    """Refuse a routed set that cannot be meant: duplicate instance ids, negative weights."""
    seen: set[str] = set()
    for backend in backends:
        if backend.instance_id in seen:
            raise ValueError(f"backend {backend.instance_id!r} is listed twice in the routed set")
        seen.add(backend.instance_id)
        if backend.weight < 0:
            raise ValueError(
                f"backend {backend.instance_id!r} has weight {backend.weight}; "
                "weights are >= 0 (0 = routed but sent no new request)"
            )
        if not 0 < backend.port < 65536:
            raise ValueError(f"backend {backend.instance_id!r} has invalid port {backend.port}")
