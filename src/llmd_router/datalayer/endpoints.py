"""Model-server endpoints and the store that holds them.

An ``Endpoint`` is one (address, port) that can serve requests. Its identity and labels are fixed;
its live state (requests in flight, counted by the router) changes as requests come and go. The
store is read synchronously by the scheduler: between two awaits nothing else runs, so what a
scheduling call reads is a consistent snapshot without copying it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = ["Endpoint", "EndpointMetrics", "EndpointStore", "host_port"]

_log = logging.getLogger(__name__)


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
    models: tuple[str, ...] | None = None  # served model ids (/v1/models); None: not polled
    signal_error: str = ""  # why the last poll or extraction failed; "" when it did not

    def __post_init__(self) -> None:
        if not self.key:
            self.key = host_port(self.address, self.port)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


class EndpointStore:
    """The endpoints of the pool, by id (``namespace/name``), with an index by key (``ip:port``).

    Discovery writes (``upsert``, ``delete``); the director reads (``candidates``, ``all``,
    ``get``). ``on_added`` / ``on_removed`` are told of each endpoint that enters or leaves (the
    collector starts and stops polling it). A removed endpoint only stops being offered: requests
    already routed to it hold the ``Endpoint`` and finish normally.

    **Freshness.** With a ``staleness_s`` threshold (set when metrics are collected), an
    endpoint is offered to new requests only while its signals are fresh: reported at least once
    and no longer ago than the threshold. So a new endpoint waits for its first good scrape (one
    tick, 50 ms by default), and one whose scrapes fail is dropped once its last report is older
    than the threshold and offered again after the next good one. When no candidate is fresh
    (every server down, or none serves metrics), they are all offered: routing on old or no
    signals beats refusing every request.
    """

    def __init__(
        self, endpoints: Iterable[Endpoint] = (), *, staleness_s: float | None = None
    ) -> None:
        self._by_id: dict[str, Endpoint] = {}
        self._by_key: dict[str, Endpoint] = {}
        self._list: tuple[Endpoint, ...] = ()
        self.staleness_s = staleness_s
        self.on_added: Callable[[Endpoint], None] = _ignore
        self.on_removed: Callable[[Endpoint], None] = _ignore
        self.replace(endpoints)

    def upsert(self, endpoint: Endpoint) -> Endpoint | None:
        """Add ``endpoint``, or update the one with its id. Returns the stored endpoint, or None
        (logged) when its address is already another endpoint's.

        Same id and address: labels and name are updated in place and live state stays. Same id,
        new address: it is another server, so the old one leaves and the new one starts fresh."""
        old = self._by_id.get(endpoint.id)
        holder = self._by_key.get(endpoint.key)
        if holder is not None and holder.id != endpoint.id:
            _log.error(
                "endpoint %s not added: %s is already endpoint %s",
                endpoint.id,
                endpoint.key,
                holder.id,
            )
            return None
        if old is not None and old.key == endpoint.key:
            old.labels = endpoint.labels
            return old
        if old is not None:
            self._remove(old)
        self._by_id[endpoint.id] = endpoint
        self._by_key[endpoint.key] = endpoint
        self._list = tuple(self._by_id.values())
        self.on_added(endpoint)
        return endpoint

    def delete(self, endpoint_id: str) -> Endpoint | None:
        """Stop offering the endpoint with this id; the removed endpoint, or None."""
        old = self._by_id.get(endpoint_id)
        if old is not None:
            self._remove(old)
        return old

    def replace(self, endpoints: Iterable[Endpoint]) -> None:
        """Make the store hold exactly ``endpoints`` (by id), keeping the live state of those
        that stay at the same address."""
        fresh = list(endpoints)
        wanted = {e.id for e in fresh}
        for old in list(self._list):
            if old.id not in wanted:
                self._remove(old)
        for endpoint in fresh:
            self.upsert(endpoint)

    def _remove(self, endpoint: Endpoint) -> None:
        del self._by_id[endpoint.id]
        if self._by_key.get(endpoint.key) is endpoint:
            del self._by_key[endpoint.key]
        self._list = tuple(self._by_id.values())
        self.on_removed(endpoint)

    def all(self) -> Sequence[Endpoint]:
        return self._list

    def get(self, key: str) -> Endpoint | None:
        return self._by_key.get(key)

    def __len__(self) -> int:
        return len(self._list)

    def is_fresh(self, endpoint: Endpoint, now: float) -> bool:
        if self.staleness_s is None:
            return True
        updated = endpoint.metrics.updated_at
        return updated > 0 and now - updated <= self.staleness_s

    def count_fresh(self, now: float) -> int:
        """How many endpoints are fresh (all of them without a threshold)."""
        return sum(1 for e in self._list if self.is_fresh(e, now))

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
                    "fresh": self.is_fresh(e, now),
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
                    "models": list(e.models) if e.models is not None else None,
                    "metricsAgeSeconds": (
                        round(now - m.updated_at, 3) if m.updated_at > 0 else None
                    ),
                    "signalError": e.signal_error or None,
                }
            )
        return out

    def candidates(self, subset: Sequence[str] | None, now: float = 0.0) -> Sequence[Endpoint]:
        """The endpoints a new request may go to: the fresh ones (see the class docstring) of
        those ``subset`` allows. ``subset`` is the proxy's subset hint: an entry with a port
        names one endpoint, an entry without names every endpoint at that address. None means no
        restriction; an empty subset allows nothing."""
        endpoints = self._list
        if subset is not None:
            exact: set[str] = set()
            hosts: set[str] = set()
            for entry in subset:
                address, port = _split(entry)
                if port is None:
                    hosts.add(address)
                else:
                    exact.add(host_port(address, port))
            endpoints = tuple(e for e in endpoints if e.key in exact or e.address in hosts)
        if self.staleness_s is None or not endpoints:
            return endpoints
        oldest = now - self.staleness_s
        fresh = [
            e for e in endpoints if e.metrics.updated_at >= oldest and e.metrics.updated_at > 0
        ]
        return fresh or endpoints


def _ignore(_: Endpoint) -> None:
    return None


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
