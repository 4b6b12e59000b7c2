"""Model-server endpoints and the store that holds them.

An ``Endpoint`` is one (address, port) that can serve requests. Its identity and labels are fixed;
its live state (requests in flight, counted by the router) changes as requests come and go. The
store is read synchronously by the scheduler: between two awaits nothing else runs, so what a
scheduling call reads is a consistent snapshot without copying it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = ["Endpoint", "EndpointMetrics", "EndpointStore", "host_port"]


def host_port(address: str, port: int) -> str:
    """``ip:port`` as Envoy expects it (IPv6 in brackets)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class EndpointMetrics:
    """What a model server last reported about itself. Replaced whole on every update, so a
    reader never sees half of one report. ``updated_at`` is 0.0 until the first report."""

    waiting_queue_size: int = 0
    running_requests: int = 0
    kv_cache_usage: float = 0.0  # a fraction, 0..1
    active_models: frozenset[str] = frozenset()  # LoRA adapters loaded and running
    waiting_models: frozenset[str] = frozenset()  # LoRA adapters requested, waiting to load
    max_active_models: int = 0
    cache_block_size: int = 0  # tokens per KV block; 0 unknown
    cache_num_blocks: int = 0  # KV blocks on the device; 0 unknown
    updated_at: float = 0.0  # time.monotonic() of the report


NO_METRICS: Final = EndpointMetrics()


@dataclass(eq=False, slots=True)
class Endpoint:
    name: str
    address: str
    port: int
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    key: str = ""
    inflight: int = 0  # requests routed here and not finished, counted by this router
    metrics: EndpointMetrics = NO_METRICS

    def __post_init__(self) -> None:
        if not self.key:
            self.key = host_port(self.address, self.port)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


class EndpointStore:
    """The endpoints of the pool, by key."""

    def __init__(self, endpoints: Iterable[Endpoint] = ()) -> None:
        self._by_key: dict[str, Endpoint] = {}
        self._list: tuple[Endpoint, ...] = ()
        self.replace(endpoints)

    def replace(self, endpoints: Iterable[Endpoint]) -> None:
        """Install a new endpoint set. An endpoint that stays keeps its live state."""
        fresh: dict[str, Endpoint] = {}
        for endpoint in endpoints:
            old = self._by_key.get(endpoint.key)
            if old is not None:
                endpoint.inflight = old.inflight
                endpoint.metrics = old.metrics
            fresh[endpoint.key] = endpoint
        self._by_key = fresh
        self._list = tuple(fresh.values())

    def all(self) -> Sequence[Endpoint]:
        return self._list

    def get(self, key: str) -> Endpoint | None:
        return self._by_key.get(key)

    def __len__(self) -> int:
        return len(self._list)

    def describe(self, now: float) -> list[dict[str, Any]]:
        """Each endpoint with its latest signals and their age (seconds; None: never)."""
        out = []
        for e in self._list:
            m = e.metrics
            out.append(
                {
                    "name": e.name,
                    "namespace": e.namespace,
                    "endpoint": e.key,
                    "labels": dict(e.labels),
                    "inflight": e.inflight,
                    "metrics": {
                        "waitingQueueSize": m.waiting_queue_size,
                        "runningRequests": m.running_requests,
                        "kvCacheUsage": m.kv_cache_usage,
                        "activeModels": sorted(m.active_models),
                        "waitingModels": sorted(m.waiting_models),
                        "maxActiveModels": m.max_active_models,
                        "cacheBlockSize": m.cache_block_size,
                        "cacheNumBlocks": m.cache_num_blocks,
                    },
                    "metricsAgeSeconds": (
                        round(now - m.updated_at, 3) if m.updated_at > 0 else None
                    ),
                }
            )
        return out

    def candidates(self, subset: Sequence[str] | None) -> Sequence[Endpoint]:
        """The endpoints a request may go to. ``subset`` (the proxy's subset hint) restricts
        them: an entry with a port names one endpoint, an entry without names every endpoint
        at that address. None means no restriction; an empty subset allows nothing."""
        if subset is None:
            return self._list
        exact: set[str] = set()
        hosts: set[str] = set()
        for entry in subset:
            address, port = _split(entry)
            if port is None:
                hosts.add(address)
            else:
                exact.add(host_port(address, port))
        return [e for e in self._list if e.key in exact or e.address in hosts]


def _split(entry: str) -> tuple[str, int | None]:
    """``ip``, ``ip:port``, ``[v6]:port`` or a bare IPv6 address."""
    entry = entry.strip()
    if entry.startswith("["):
        address, _, rest = entry[1:].partition("]")
        port = rest.lstrip(":")
        return address, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        address, port = entry.split(":")
        return address, int(port) if port.isdigit() else None
    return entry, None  # an address alone (IPv4, or IPv6 without brackets)
