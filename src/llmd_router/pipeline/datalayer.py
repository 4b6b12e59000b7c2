"""Binding ``dataLayer``: which source each extractor reads, and the discovery plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from llmd_router.config import ConfigError
from llmd_router.config.schema import DataLayer
from llmd_router.datalayer.collector import SourceBinding
from llmd_router.datalayer.interfaces import EndpointDiscovery, Extractor, PollingSource

if TYPE_CHECKING:
    from llmd_router.pipeline.pipeline import BuiltPlugin
    from llmd_router.pipeline.plugin_set import PluginSet

__all__ = ["bind_data_layer"]

DEFAULT_METRICS_SOURCE: Final = "metrics-data-source"
DEFAULT_METRICS_EXTRACTOR: Final = "core-metrics-extractor"


def bind_data_layer(b: PluginSet) -> tuple[tuple[SourceBinding, ...], EndpointDiscovery | None]:
    """The sources with their extractors, and the discovery plugin, from ``dataLayer``.

    As llm-d: unless ``injectDefaults: false``, a configuration that binds no
    ``metrics-data-source`` gets one, with a ``core-metrics-extractor``. A plugin of those types
    already in ``plugins`` is used rather than a second one built."""
    layer = b.loaded.config.data_layer or DataLayer()
    pairs: list[tuple[str, list[str]]] = [
        (s.plugin_ref, [e.plugin_ref for e in s.extractors]) for s in layer.sources
    ]
    for ref, extractors in pairs:
        for name in (ref, *extractors):
            if name not in b.plugins:
                raise ConfigError(f"dataLayer: plugin {name!r} is not in plugins")
    bound = {b.plugins[ref].type for ref, _ in pairs}
    if layer.inject_defaults and DEFAULT_METRICS_SOURCE not in bound:
        source = _first_of_type(b, DEFAULT_METRICS_SOURCE)
        extractor = _first_of_type(b, DEFAULT_METRICS_EXTRACTOR)
        pairs.append((source.name, [extractor.name]))
    bindings: list[SourceBinding] = []
    seen: set[str] = set()
    for ref, extractors in pairs:
        if ref in seen:
            raise ConfigError(f"dataLayer.sources: source {ref!r} is listed twice")
        seen.add(ref)
        source = b.plugins[ref]
        if not isinstance(source.instance, PollingSource):
            raise ConfigError(f"dataLayer.sources: plugin {ref!r} is not a data source")
        bound_extractors = []
        for name in extractors:
            extractor = b.plugins[name]
            if not isinstance(extractor.instance, Extractor):
                raise ConfigError(f"dataLayer.sources: plugin {name!r} is not an extractor")
            if extractor.instance.input != source.instance.output:
                raise ConfigError(
                    f"dataLayer.sources: extractor {name!r} reads {extractor.instance.input!r} "
                    f"but source {ref!r} gives {source.instance.output!r}"
                )
            bound_extractors.append((extractor.instance, extractor.type))
        bindings.append(SourceBinding(source.instance, source.type, tuple(bound_extractors)))
    if not bindings:
        b.notes.append("no data sources: model-server metrics are not collected")
    discovery = None
    if layer.discovery is not None:
        ref = layer.discovery.plugin_ref
        built = b.plugins.get(ref)
        if built is None:
            raise ConfigError(f"dataLayer.discovery: plugin {ref!r} is not in plugins")
        if not isinstance(built.instance, EndpointDiscovery):
            raise ConfigError(
                f"dataLayer.discovery: plugin {ref!r} (type {built.type!r}) does not "
                "discover endpoints"
            )
        discovery = built.instance
    return tuple(bindings), discovery


def _first_of_type(b: PluginSet, type_name: str) -> BuiltPlugin:
    for built in b.plugins.values():
        if built.type == type_name:
            return built
    return b.ensure(type_name)
