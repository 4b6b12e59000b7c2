"""The one table of plugin kinds: the name each goes by, and the contract that defines it.

A plugin is of every kind whose contract it fulfils (one object may be a filter and a scorer,
or a producer and a pre-request hook). The pipeline wires a plugin by its kinds, the debug pages
and the catalogue list them; all of them read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from llmd_router.datalayer.interfaces import EndpointDiscovery, Extractor, PollingSource
from llmd_router.framework.interfaces import (
    Admitter,
    AsyncDataProducer,
    DataProducer,
    Decider,
    Filter,
    Parser,
    Picker,
    PreRequest,
    ProfileHandler,
    ResponseComplete,
    SaturationDetector,
    Scorer,
)

__all__ = ["KINDS", "Kind", "kinds_of", "kinds_of_class"]


@dataclass(frozen=True, slots=True)
class Kind:
    name: str  # as /debug/plugins names it
    label: str  # as prose and the catalogue write it
    contract: type


KINDS: Final = (
    Kind("ProfileHandler", "profile handler", ProfileHandler),
    Kind("Decider", "decider", Decider),
    Kind("Filter", "filter", Filter),
    Kind("Scorer", "scorer", Scorer),
    Kind("Picker", "picker", Picker),
    Kind("DataProducer", "data producer", DataProducer),
    Kind("AsyncDataProducer", "data producer", AsyncDataProducer),  # one that waits
    Kind("Admitter", "admitter", Admitter),
    Kind("PreRequest", "pre-request", PreRequest),
    Kind("ResponseComplete", "response-complete", ResponseComplete),
    Kind("SaturationDetector", "saturation detector", SaturationDetector),
    Kind("Parser", "parser", Parser),
    Kind("DataSource", "data source", PollingSource),
    Kind("Extractor", "extractor", Extractor),
    Kind("Discovery", "discovery plugin", EndpointDiscovery),
)


def kinds_of(plugin: object) -> list[Kind]:
    """The kinds a plugin instance is."""
    return [kind for kind in KINDS if isinstance(plugin, kind.contract)]


def kinds_of_class(cls: type) -> list[Kind]:
    """The kinds a plugin class makes, judged by its methods (its attributes may be set only
    when an instance is built)."""
    out = []
    for kind in KINDS:
        members = [m for m in kind.contract.__dict__ if not m.startswith("_") and m != "name"]
        methods = [m for m in members if callable(getattr(kind.contract, m, None))]
        if methods and all(callable(getattr(cls, m, None)) for m in methods):
            out.append(kind)
    return out
