"""An index of prompt blocks by endpoint, from the router's own routing history.

Theory of operation. Each endpoint has an LRU of the block keys recorded for it, bounded by its
capacity (about the number of KV blocks its cache holds); ``holders`` maps each key to the
endpoints whose LRU has it. Recording a request's keys on an endpoint moves them to the most
recent end of its LRU and evicts the least recent keys beyond its capacity, dropping the endpoint
from those keys' holders. So the index is bounded by the sum of the endpoints' capacities, and an
endpoint that leaves the pool is forgotten at once.

Matching walks a request's keys in order. Because each key is chained to the ones before it, a
key held by an endpoint means the endpoint is believed to hold the prefix up to that block. The
walk stops at the first key no endpoint holds (nothing past it can be held); every endpoint that
holds a key gains one block, as llm-d's matcher counts, so an endpoint missing block ``i`` but
holding ``i + 1`` still gains for ``i + 1``.

All of it is synchronous and in memory: the scheduler reads it on the request path.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["ApproxPrefixIndex"]

# Measured with tracemalloc on CPython 3.11: ten endpoints of 100,000 keys each, half of them
# shared, took 291 MB for 1,000,000 entries (the LRU node, the holder-set member, the key's int
# and the tables' slack).
BYTES_PER_ENTRY: Final = 290


class ApproxPrefixIndex:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.default_capacity = capacity
        self._lrus: dict[str, OrderedDict[int, None]] = {}
        self._capacity: dict[str, int] = {}
        self._holders: dict[int, set[str]] = {}
        self.evictions = 0

    def set_capacity(self, endpoint: str, capacity: int) -> None:
        """How many keys ``endpoint`` keeps (its KV blocks, when known); excess is evicted."""
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._capacity[endpoint] = capacity
        lru = self._lrus.get(endpoint)
        if lru is not None:
            self._evict(endpoint, lru, capacity)

    def capacity(self, endpoint: str) -> int:
        return self._capacity.get(endpoint, self.default_capacity)

    def record(self, endpoint: str, keys: Iterable[int]) -> None:
        """``endpoint`` now holds these blocks (the request was routed there)."""
        lru = self._lrus.get(endpoint)
        if lru is None:
            lru = self._lrus[endpoint] = OrderedDict()
        holders = self._holders
        for key in keys:
            if key in lru:
                lru.move_to_end(key)
                continue
            lru[key] = None
            held = holders.get(key)
            if held is None:
                holders[key] = {endpoint}
            else:
                held.add(endpoint)
        self._evict(endpoint, lru, self.capacity(endpoint))

    def _evict(self, endpoint: str, lru: OrderedDict[int, None], capacity: int) -> None:
        holders = self._holders
        while len(lru) > capacity:
            key, _ = lru.popitem(last=False)
            self.evictions += 1
            held = holders.get(key)
            if held is not None:
                held.discard(endpoint)
                if not held:
                    del holders[key]

    def match(self, keys: Sequence[int]) -> dict[str, int]:
        """Blocks of ``keys`` each endpoint is believed to hold (endpoints with none are left
        out): walk in order, stop at the first key no endpoint holds."""
        holders = self._holders
        matched: dict[str, int] = {}
        for key in keys:
            held = holders.get(key)
            if not held:
                break
            for endpoint in held:
                matched[endpoint] = matched.get(endpoint, 0) + 1
        return matched

    def forget(self, endpoint: str) -> None:
        """``endpoint`` left the pool: drop everything recorded for it."""
        lru = self._lrus.pop(endpoint, None)
        self._capacity.pop(endpoint, None)
        if lru is None:
            return
        holders = self._holders
        for key in lru:
            held = holders.get(key)
            if held is not None:
                held.discard(endpoint)
                if not held:
                    del holders[key]

    def __contains__(self, endpoint: object) -> bool:
        return endpoint in self._lrus

    def endpoints(self) -> list[str]:
        return list(self._lrus)

    def __len__(self) -> int:
        """Entries (an endpoint holding a key) in the index."""
        return sum(len(lru) for lru in self._lrus.values())

    def statistics(self) -> dict[str, object]:
        entries = len(self)
        return {
            "endpoints": {
                endpoint: {"blocks": len(lru), "capacity": self.capacity(endpoint)}
                for endpoint, lru in sorted(self._lrus.items())
            },
            "keys": len(self._holders),
            "entries": entries,
            "evictions": self.evictions,
            "approxBytes": entries * BYTES_PER_ENTRY,
        }
