"""Model-server endpoints, as frozen snapshots.

An ``Endpoint`` is one (address, port) that can serve requests: its identity, its labels and the
signals last read from it, frozen. Nothing changes an ``Endpoint``: the store replaces it with a
new one when discovery or a poll brings news, so a scheduling decision, a request in flight or a
debug page holds a consistent view for as long as it keeps it. The router's own count of work in
flight is not part of an endpoint: it changes with every request (``inflight``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["NO_METRICS", "Endpoint", "EndpointMetrics", "Signals", "host_port"]


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


@dataclass(frozen=True, eq=False, slots=True)
class Endpoint:
    """Equality is identity: two snapshots of one server are two objects (compare ``id`` or
    ``key``)."""

    name: str
    address: str
    port: int
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    key: str = ""
    metrics: EndpointMetrics = NO_METRICS
    models: tuple[str, ...] | None = None  # served model ids (/v1/models); None: not polled
    signal_error: str = ""  # why the last poll or extraction failed; "" when it did not

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", host_port(self.address, self.port))

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Signals:
    """What an extractor read from one poll: new values for the endpoint's signals (None: left
    as they were) and one message per signal that could not be read."""

    metrics: EndpointMetrics | None = None
    models: tuple[str, ...] | None = None
    errors: Sequence[str] = ()
