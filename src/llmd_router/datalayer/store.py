"""The pool's endpoints, owned by one store that every change goes through.

Discovery writes identities (``upsert``, ``delete``, ``replace``); the collector writes what
polls read (``report``). Each write replaces the endpoint's frozen snapshot. Readers (the
director, the scheduler's plugins, the debug pages) get ``candidates()`` / ``all()``: a tuple of
snapshots, rebuilt once after writes and shared by every read until the next one. Everything
runs on the event loop, so what one scheduling call reads is consistent without locks.

The store also owns the router's count of work in flight (``inflight``), keyed by endpoint key,
which the request lifecycle charges and refunds.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from llmd_router.datalayer.endpoints import host_port
from llmd_router.datalayer.inflight import InFlightLedger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from llmd_router.datalayer.endpoints import Endpoint, EndpointMetrics

__all__ = ["EndpointStore"]

_log = logging.getLogger(__name__)


class EndpointStore:
    """The endpoints of the pool, by id (``namespace/name``), with an index by key (``ip:port``).

    Discovery writes (``upsert``, ``delete``), the collector reports signals (``report``); the
    director reads (``candidates``, ``all``, ``get``). ``on_added`` / ``on_removed`` are told of
    each endpoint that enters or leaves (the collector starts and stops polling it). A removed
    endpoint only stops being offered: requests already routed to it hold their snapshot and
    finish normally.

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
        self._by_key: dict[str, str] = {}  # key -> id
        self._list: tuple[Endpoint, ...] | None = ()  # None: rebuilt at the next read
        self.staleness_s = staleness_s
        self.inflight = InFlightLedger()  # the one count of work routed and not yet ended
        self.on_added: Callable[[Endpoint], None] = _ignore
        self.on_removed: Callable[[Endpoint], None] = _ignore
        self.replace(endpoints)

    def upsert(self, endpoint: Endpoint) -> Endpoint | None:
        """Add ``endpoint``, or update the one with its id. Returns the stored endpoint, or None
        (logged) when its address is already another endpoint's.

        Same id and address: the labels are updated and the signals stay. Same id, new address:
        it is another server, so the old one leaves and the new one starts fresh."""
        old = self._by_id.get(endpoint.id)
        holder = self._by_key.get(endpoint.key)
        if holder is not None and holder != endpoint.id:
            _log.error(
                "endpoint %s not added: %s is already endpoint %s",
                endpoint.id,
                endpoint.key,
                holder,
            )
            return None
        if old is not None and old.key == endpoint.key:
            if old.labels == endpoint.labels:
                return old
            return self._put(dataclasses.replace(old, labels=endpoint.labels))
        if old is not None:
            self._remove(old)
        self._by_key[endpoint.key] = endpoint.id
        self._put(endpoint)
        self.on_added(endpoint)
        return endpoint

    def report(
        self,
        endpoint_id: str,
        *,
        metrics: EndpointMetrics | None = None,
        models: tuple[str, ...] | None = None,
        signal_error: str | None = None,
    ) -> Endpoint | None:
        """New signals for an endpoint (None: unchanged); the new snapshot, or None when the
        endpoint has left the pool."""
        old = self._by_id.get(endpoint_id)
        if old is None:
            return None
        changes: dict[str, Any] = {}
        if metrics is not None:
            changes["metrics"] = metrics
        if models is not None:
            changes["models"] = models
        if signal_error is not None and signal_error != old.signal_error:
            changes["signal_error"] = signal_error
        if not changes:
            return old
        return self._put(dataclasses.replace(old, **changes))

    def _put(self, endpoint: Endpoint) -> Endpoint:
        self._by_id[endpoint.id] = endpoint
        self._list = None
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
        for old in list(self._by_id.values()):
            if old.id not in wanted:
                self._remove(old)
        for endpoint in fresh:
            self.upsert(endpoint)

    def _remove(self, endpoint: Endpoint) -> None:
        del self._by_id[endpoint.id]
        if self._by_key.get(endpoint.key) == endpoint.id:
            del self._by_key[endpoint.key]
        self._list = None
        self.on_removed(endpoint)

    def all(self) -> Sequence[Endpoint]:
        """Every endpoint's current snapshot, in the order they arrived."""
        endpoints = self._list
        if endpoints is None:
            endpoints = self._list = tuple(self._by_id.values())
        return endpoints

    def get(self, key: str) -> Endpoint | None:
        """The endpoint at ``key`` (``ip:port``)."""
        endpoint_id = self._by_key.get(key)
        return self._by_id.get(endpoint_id) if endpoint_id is not None else None

    def by_id(self, endpoint_id: str) -> Endpoint | None:
        return self._by_id.get(endpoint_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def is_fresh(self, endpoint: Endpoint, now: float) -> bool:
        if self.staleness_s is None:
            return True
        updated = endpoint.metrics.updated_at
        return updated > 0 and now - updated <= self.staleness_s

    def count_fresh(self, now: float) -> int:
        """How many endpoints are fresh (all of them without a threshold)."""
        return sum(1 for e in self.all() if self.is_fresh(e, now))

    def describe(self, now: float) -> list[dict[str, Any]]:
        """Each endpoint with its latest signals and their age (seconds; None: never)."""
        out = []
        for e in self.all():
            m = e.metrics
            out.append(
                {
                    "name": e.name,
                    "namespace": e.namespace,
                    "endpoint": e.key,
                    "labels": dict(e.labels),
                    "inflight": self.inflight.load(e.key).requests,
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
        endpoints = self.all()
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
