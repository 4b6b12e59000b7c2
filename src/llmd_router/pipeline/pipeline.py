"""What one configuration decides, built: the ``Pipeline`` the director serves requests with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmd_router.datalayer.interfaces import UpdatesMetrics
from llmd_router.framework.kinds import kinds_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmd_router.config import LoadedConfig
    from llmd_router.datalayer.collector import SourceBinding
    from llmd_router.datalayer.interfaces import EndpointDiscovery
    from llmd_router.framework.interfaces import (
        Admitter,
        DataProducer,
        PreRequest,
        ResponseComplete,
        SaturationDetector,
    )
    from llmd_router.framework.scheduler import Observe, PluginScheduler
    from llmd_router.parsing.select import ParserSet

__all__ = ["BuiltPlugin", "Pipeline"]


@dataclass(frozen=True, slots=True)
class BuiltPlugin:
    name: str
    type: str
    instance: Any
    identity: bytes  # type, name and parameters: equal identities may share an instance
    injected: bool = False  # added by a system default, not named in the configuration

    def kinds(self) -> list[str]:
        return [kind.name for kind in kinds_of(self.instance)]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Everything one configuration decides, ready to serve requests. Each plugin call point
    is paired with the observer that times it."""

    loaded: LoadedConfig
    plugins: Mapping[str, BuiltPlugin]
    scheduler: PluginScheduler
    parsers: ParserSet
    # In order; those named in ``awaiting`` are AsyncDataProducers, the others DataProducers.
    producers: tuple[tuple[DataProducer, Observe], ...]
    admitters: tuple[tuple[Admitter, Observe], ...]
    pre_request: tuple[tuple[PreRequest, Observe], ...]
    response_complete: tuple[tuple[ResponseComplete, Observe], ...]
    saturation: SaturationDetector
    notes: tuple[str, ...] = field(default=())
    parse_observers: Mapping[str, Observe] = field(default_factory=dict)  # by parser name
    sources: tuple[SourceBinding, ...] = ()  # what the collector polls, and who reads it
    discovery: EndpointDiscovery | None = None  # dataLayer.discovery, when configured
    awaiting: frozenset[str] = frozenset()  # the producers the director must await

    @property
    def collects_metrics(self) -> bool:
        """Some bound extractor keeps ``endpoint.metrics`` up to date (freshness applies)."""
        return any(
            isinstance(extractor, UpdatesMetrics) and extractor.updates_metrics
            for binding in self.sources
            for extractor, _ in binding.extractors
        )
