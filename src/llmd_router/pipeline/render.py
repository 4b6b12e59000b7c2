"""A pipeline as data: the configuration as it runs (``check-config``, ``/debug/config``) and
its plugins with their kinds and state (``/debug/plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from llmd_router.framework.capabilities import HasStatistics, Parameterised, Produces
from llmd_router.framework.cycle import is_prefix_match_key

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmd_router.pipeline.pipeline import Pipeline

__all__ = ["describe_plugins", "resolved_config"]


def resolved_config(pipeline: Pipeline) -> dict[str, Any]:
    """The configuration as it runs: defaults filled in, parameters fully spelled out."""
    plugins = []
    for built in pipeline.plugins.values():
        entry: dict[str, Any] = {"name": built.name, "type": built.type}
        if isinstance(built.instance, Parameterised):
            entry["parameters"] = msgspec.to_builtins(built.instance.params)
        if built.injected:
            entry["injected"] = True
        plugins.append(entry)
    loaded = pipeline.loaded
    return {
        "apiVersion": loaded.config.api_version,
        "kind": loaded.config.kind,
        "featureGates": [f"{k}={str(v).lower()}" for k, v in loaded.gates.items()],
        "plugins": plugins,
        "schedulingProfiles": _profiles(pipeline),
        "profileHandler": pipeline.scheduler.handler.name,
        "requestHandler": {"parsers": [{"pluginRef": p.name} for p in pipeline.parsers.parsers]},
        "saturationDetector": {"pluginRef": pipeline.saturation.name},
        "dataLayer": _data_layer(pipeline),
        "requestControl": {
            "dataProducers": [p.name for p, _ in pipeline.producers],
            "admitters": [p.name for p, _ in pipeline.admitters],
            "preRequest": [p.name for p, _ in pipeline.pre_request],
            "responseComplete": [p.name for p, _ in pipeline.response_complete],
        },
    }


def _profiles(pipeline: Pipeline) -> list[dict[str, Any]]:
    profiles = []
    for profile in pipeline.scheduler.profiles.values():
        refs: list[dict[str, Any]] = [{"pluginRef": f.name} for f, _ in profile.filters]
        refs += [{"pluginRef": s.name, "weight": w} for s, w, _ in profile.scorers]
        refs.append({"pluginRef": profile.picker[0].name})
        profiles.append({"name": profile.name, "plugins": refs})
    return profiles


def _data_layer(pipeline: Pipeline) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sources": [
            {
                "pluginRef": b.source.name,
                "extractors": [{"pluginRef": e.name} for e, _ in b.extractors],
            }
            for b in pipeline.sources
        ]
    }
    if pipeline.discovery is not None:
        out["discovery"] = {"pluginRef": pipeline.discovery.name}
    return out


def describe_plugins(
    pipeline: Pipeline, collector: Mapping[str, object] | None = None
) -> dict[str, Any]:
    """Each plugin by name: its type, its kinds, and its state where it reports one. The
    entry of a source the collector polls carries the collector's ``statistics``."""
    polled = {id(b.source) for b in pipeline.sources}
    out: dict[str, Any] = {}
    for name, built in pipeline.plugins.items():
        entry: dict[str, Any] = {"type": built.type, "kinds": built.kinds()}
        if collector is not None and id(built.instance) in polled:
            entry["collector"] = collector
        if isinstance(built.instance, HasStatistics):
            entry["state"] = built.instance.statistics()
        out[name] = entry
    return out


def describe_prefix(pipeline: Pipeline) -> dict[str, Any]:
    """The prefix indexes (``/debug/prefix``): each prefix producer by name, its type and
    its state (the index's size, its memory, per endpoint the blocks it holds)."""
    out: dict[str, Any] = {}
    for name, built in pipeline.plugins.items():
        plugin = built.instance
        if not isinstance(plugin, Produces) or not any(map(is_prefix_match_key, plugin.produces)):
            continue
        entry: dict[str, Any] = {"type": built.type}
        if isinstance(plugin, HasStatistics):
            entry.update(plugin.statistics())
        out[name] = entry
    return {"producers": out}
