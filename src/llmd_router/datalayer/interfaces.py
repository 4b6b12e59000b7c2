"""The data layer's seams: where endpoints come from, and how their signals are collected.

**Discovery.** An ``EndpointDiscovery`` tells a ``DiscoverySink`` which endpoints exist. Its
``run`` is started once, as a task the router owns, and runs until cancelled:

1. report every endpoint it knows (``upsert``), then call ``synced()`` once, even when there are
   none: the router waits for it before it declares itself ready;
2. then report changes as they happen: ``upsert`` for a new or changed endpoint (same ``id``,
   new address, port or labels), ``delete`` with the ``id`` of one that left.

Calls are made from the event loop, in the order things happened. ``run`` should survive bad
input (log it, keep the last good state) and raise only when it can never work (for example,
the file it was given cannot be read at start-up). The built-ins are a fixed list
(``--endpoints``) and a watched file (``--endpoints-file``, the ``file-discovery`` plugin); a
Kubernetes InferencePool watch is another implementation of the same two methods.

**Signals.** A ``PollingSource`` fetches something from one endpoint (``/metrics``,
``/v1/models``); the ``Extractor``s bound to it in ``dataLayer.sources`` turn what it fetched
into the endpoint's signals (``Signals``), which the collector reports to the store: an
extractor reads the endpoint's snapshot and returns what changed, it never writes. A source
names what it returns (``output``) and an extractor what
it reads (``input``); the configuration is refused when they differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint, Signals

__all__ = ["DiscoverySink", "EndpointDiscovery", "Extractor", "PollingSource", "UpdatesMetrics"]


class DiscoverySink(Protocol):
    def upsert(self, endpoint: Endpoint) -> None: ...

    def delete(self, endpoint_id: str) -> None: ...

    def synced(self) -> None: ...


@runtime_checkable
class EndpointDiscovery(Protocol):
    name: str

    async def run(self, sink: DiscoverySink) -> None: ...


@runtime_checkable
class PollingSource(Protocol):
    name: str
    output: str  # what ``poll`` returns, e.g. "prometheus-text"
    interval_s: float | None  # its own period (a multiple of the base tick); None: every tick

    async def poll(self, endpoint: Endpoint) -> Any:
        """Fetch from ``endpoint``. Raises any Exception on failure (the message is logged).
        The collector bounds the time; a cancelled poll must leave nothing half-done."""
        ...

    def forget(self, endpoint: Endpoint) -> None:
        """``endpoint`` left the pool: release what was kept for it (a connection)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Extractor(Protocol):
    name: str
    input: str  # the ``output`` of the sources it can be bound to

    def extract(self, data: Any, endpoint: Endpoint, now: float) -> Signals:
        """The endpoint's new signals read from ``data``, with one message per signal that
        could not be read (none when all were). ``endpoint`` is its current snapshot (its
        previous signals, its labels); ``now`` is ``time.monotonic()`` at the end of the poll."""
        ...


@runtime_checkable
class UpdatesMetrics(Protocol):
    """An extractor that declares it keeps ``endpoint.metrics`` current: the store offers only
    endpoints whose metrics are fresh once one such extractor is bound."""

    updates_metrics: bool
