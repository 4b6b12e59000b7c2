"""What a plugin may declare beyond its kinds, each as a Protocol the pipeline checks for.

The kinds (``interfaces``) say where a plugin runs; these say what the pipeline must do for it
when it is built:

- ``Produces`` / ``Consumes``: the per-request data keys it writes or reads. A key that is
  consumed and produced by nobody gets its default producer (``Registry.default_producer``);
  producers are ordered so that each runs after the producers of what it consumes.
- ``Reads``: keys it uses when they are there: producers are ordered after their producers too,
  but no producer is created for them.
- ``Binds``: it refers to other plugins (by name) or to the router's shared state; ``bind`` is
  called with a ``PluginHandle`` once every plugin of the configuration exists, at every build
  (start-up and each reload).
- ``ChecksProfiles``: a profile handler that names profiles checks that they exist.
- ``Parameterised``: it keeps its parsed parameters as ``params`` (the resolved configuration
  prints them).
- ``HasStatistics``: ``statistics()`` is JSON-able data about its state (``/debug/plugins``).
- ``Closes``: ``aclose()`` releases what it holds, when a reload drops it or the router stops.

Errors raised by ``bind`` and ``check_profiles`` are configuration errors: the configuration
is refused, naming the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.inflight import InFlightView
    from llmd_router.framework.cycle import DataKey

__all__ = [
    "UNRECORDED",
    "Binds",
    "ChecksProfiles",
    "Closes",
    "Consumes",
    "HasStatistics",
    "Parameterised",
    "PluginHandle",
    "PluginMetrics",
    "PoolView",
    "PrefixIndexMetrics",
    "Produces",
    "Reads",
]


class PoolView(Protocol):
    """The pool's endpoints now (the endpoint store, read-only)."""

    def all(self) -> Sequence[Endpoint]: ...


class PrefixIndexMetrics(Protocol):
    """A prefix index's series in the router's metrics (llm-d's ``prefix_indexer_*``)."""

    def matched(self, matched_bytes: int, total_bytes: int) -> None:
        """One routed request's match on its chosen endpoint, in bytes of prompt."""
        ...


class PluginMetrics(Protocol):
    """The series plugins may own in the router's metrics, by plugin type and name."""

    def prefix_index(
        self, plugin_type: str, plugin_name: str, entries: Callable[[], int]
    ) -> PrefixIndexMetrics:
        """The series of one prefix index; ``entries()`` is read when the metrics are."""
        ...


class _Unrecorded:
    """Metrics that go nowhere: where no router records them (``check-config``, tests)."""

    def prefix_index(
        self, plugin_type: str, plugin_name: str, entries: Callable[[], int]
    ) -> PrefixIndexMetrics:
        return self

    def matched(self, matched_bytes: int, total_bytes: int) -> None:
        pass


UNRECORDED: PluginMetrics = _Unrecorded()


@dataclass(frozen=True, slots=True)
class PluginHandle:
    """What a plugin may reach when it is bound: the configuration's other plugins by name, the
    router's count of work in flight, and the pool's endpoints (both read-only; ``pool`` is None
    where no pool is served, as in ``check-config``), and the metrics plugins may record."""

    plugins: Mapping[str, object]
    inflight: InFlightView
    pool: PoolView | None = None
    metrics: PluginMetrics = UNRECORDED


@runtime_checkable
class Produces(Protocol):
    produces: tuple[DataKey[Any], ...]


@runtime_checkable
class Consumes(Protocol):
    consumes: tuple[DataKey[Any], ...]


@runtime_checkable
class Reads(Protocol):
    reads: tuple[DataKey[Any], ...]


@runtime_checkable
class Binds(Protocol):
    def bind(self, handle: PluginHandle) -> None:
        """Find what the plugin refers to. Raises ConfigError (or ValueError) when it cannot."""
        ...


@runtime_checkable
class ChecksProfiles(Protocol):
    def check_profiles(self, names: Collection[str]) -> None:
        """Raise ConfigError unless the profiles this handler runs are among ``names``."""
        ...


@runtime_checkable
class Parameterised(Protocol):
    params: Any


@runtime_checkable
class Closes(Protocol):
    async def aclose(self) -> None:
        """Release what the plugin holds (connections): its configuration was replaced and it
        was not carried over, or the router stops."""
        ...


@runtime_checkable
class HasStatistics(Protocol):
    def statistics(self) -> Mapping[str, object]: ...
