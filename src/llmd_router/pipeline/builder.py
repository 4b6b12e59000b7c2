"""From a configuration to a ``Pipeline``: every plugin built, wired and checked.

The steps, as llm-d's loader (``epp-request-path.md`` §5.3, §6.2), with our order made
deterministic (configuration order wherever llm-d iterates a Go map):

1. Build each configured plugin (its parameters parsed and validated by the registry).
2. System defaults: no profile → one ``default`` profile with every filter, scorer and picker;
   no picker anywhere → ``max-score-picker``; a profile without a picker gets the first one;
   one profile and no handler → ``single-profile-handler``; parsers (``requestHandler.parsers``,
   else the deprecated ``parser``, else ``openai-parser`` then ``passthrough-parser``), each
   built from its type when no plugin has that name; the saturation detector
   (``utilization-detector`` unless named); a default producer for every data key some plugin
   consumes and none produces; unless ``dataLayer.injectDefaults: false``, a
   ``metrics-data-source`` read by a ``core-metrics-extractor`` when no metrics source is bound.
3. Check ``dataLayer``: every source is a data source, every extractor reads what its source
   gives, the discovery plugin discovers endpoints (``pipeline.datalayer``). Let plugins that
   refer to others by name or read the in-flight count (``Binds``) find them, and a profile
   handler that names profiles (``ChecksProfiles``) check that they exist.
4. Wire: profiles get their filters, weighted scorers and picker; every plugin of a
   request-control kind joins that list, whether or not a profile names it. Producers are
   ordered so that each runs after the producers of what it consumes or reads.

Any inconsistency is a ``ConfigError`` naming the plugin, profile or field. Building is also
how a reload is validated: a pipeline that builds is complete. Given the previous pipeline, a
plugin whose type, name and parameters are unchanged is carried over as the same object, so
its state (LRU lists, session bindings) survives the reload.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from llmd_router.config import ConfigError
from llmd_router.datalayer.inflight import InFlightLedger
from llmd_router.framework.capabilities import (
    UNRECORDED,
    Binds,
    ChecksProfiles,
    Consumes,
    PluginHandle,
    PluginMetrics,
    Produces,
    Reads,
)
from llmd_router.framework.interfaces import (
    Admitter,
    AsyncDataProducer,
    DataProducer,
    Filter,
    Parser,
    Picker,
    PreRequest,
    ProfileHandler,
    ResponseComplete,
    SaturationDetector,
    Scorer,
)
from llmd_router.framework.scheduler import (
    Observe,
    PluginScheduler,
    PluginTimer,
    SchedulerProfile,
    null_timer,
)
from llmd_router.parsing.select import ParserSet
from llmd_router.pipeline.datalayer import bind_data_layer
from llmd_router.pipeline.pipeline import BuiltPlugin, Pipeline
from llmd_router.pipeline.plugin_set import PluginSet

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmd_router.config import LoadedConfig
    from llmd_router.datalayer.inflight import InFlightView
    from llmd_router.framework.capabilities import PoolView
    from llmd_router.framework.cycle import DataKey
    from llmd_router.framework.plugin import Registry

__all__ = ["build_pipeline"]

_log = logging.getLogger(__name__)

DEFAULT_PARSERS: Final = ("openai-parser", "passthrough-parser")
DEFAULT_PICKER: Final = "max-score-picker"
DEFAULT_HANDLER: Final = "single-profile-handler"
DEFAULT_SATURATION: Final = "utilization-detector"


def build_pipeline(
    loaded: LoadedConfig,
    registry: Registry,
    *,
    timer: PluginTimer = null_timer,
    allow_experimental: bool = False,
    previous: Pipeline | None = None,
    inflight: InFlightView | None = None,
    pool: PoolView | None = None,
    metrics: PluginMetrics = UNRECORDED,
) -> Pipeline:
    """Build and check everything ``loaded`` describes. Raises ConfigError. ``inflight`` is
    the count of work in flight that plugins may read (a fresh, empty one when not given),
    ``pool`` the endpoints served (none when not given), and ``metrics`` where plugins record
    their own series (nowhere when not given)."""
    _check_gates(loaded)
    config = loaded.config
    b = PluginSet(loaded, registry, allow_experimental=allow_experimental, previous=previous)
    for spec in config.plugins:
        b.add(spec.type, spec.name, spec.parameters, injected=False)

    profiles = _profiles(b)
    handler = _handler(b, len(profiles))
    if isinstance(handler.instance, ChecksProfiles):  # a handler that names profiles
        handler.instance.check_profiles(list(profiles))
    parsers = _parsers(b)
    saturation = _saturation(b)
    sources, discovery = bind_data_layer(b)
    _default_producers(b)
    _bind(b, inflight if inflight is not None else InFlightLedger(), pool, metrics)

    ordered = _ordered_producers(b)

    def observed(point: str, built: BuiltPlugin) -> Observe:
        return timer(point, built.type, built.name)

    def listed(point: str, proto: type) -> tuple[tuple[Any, Observe], ...]:
        return tuple((x.instance, observed(point, x)) for x in b.of_kind(proto))

    return Pipeline(
        loaded=loaded,
        plugins=dict(b.plugins),
        scheduler=PluginScheduler(
            handler.instance,
            {name: _wire(b, name, refs, observed) for name, refs in profiles.items()},
            timer=timer,
            handler_type=handler.type,
        ),
        parsers=parsers,
        producers=tuple((x.instance, observed("DataProducer", x)) for x in ordered),
        awaiting=frozenset(x.name for x in ordered if isinstance(x.instance, AsyncDataProducer)),
        admitters=listed("Admission", Admitter),
        pre_request=listed("PreRequest", PreRequest),
        response_complete=listed("ResponseComplete", ResponseComplete),
        saturation=saturation,
        notes=tuple(b.notes),
        parse_observers={
            p.name: observed("RequestParsing", b.plugins[p.name]) for p in parsers.parsers
        },
        sources=sources,
        discovery=discovery,
    )


def _check_gates(loaded: LoadedConfig) -> None:
    if loaded.gates.get("flowControl"):
        raise ConfigError(
            "featureGates: flowControl: flow control is not available in this version; "
            "remove the gate (requests are admitted by the saturation detector meanwhile)"
        )
    if loaded.config.flow_control is not None:
        _log.warning("flowControl is ignored: the flowControl feature gate is off")


def _wire(
    b: PluginSet,
    name: str,
    refs: list[tuple[str, float]],
    observed: Callable[[str, BuiltPlugin], Observe],
) -> SchedulerProfile:
    """A profile's filters, weighted scorers and one picker, each with its timer."""
    filters, scorers, pickers = [], [], []
    for ref_name, weight in refs:
        built = b.plugins[ref_name]
        plugin = built.instance
        if isinstance(plugin, Filter):
            filters.append((plugin, observed("Filter", built)))
        if isinstance(plugin, Scorer):
            scorers.append((plugin, weight, observed("Scorer", built)))
        if isinstance(plugin, Picker):
            pickers.append((plugin, observed("Picker", built)))
    if len(pickers) != 1:
        names = ", ".join(repr(p.name) for p, _ in pickers)
        raise ConfigError(f"schedulingProfiles: profile {name!r} has several pickers: {names}")
    return SchedulerProfile(name, tuple(filters), tuple(scorers), pickers[0])


def _profiles(b: PluginSet) -> dict[str, list[tuple[str, float]]]:
    """Profile name -> (plugin name, weight), with the picker defaults applied."""
    config = b.loaded.config
    profiles: dict[str, list[tuple[str, float]]] = {}
    if not config.scheduling_profiles:
        members = [
            x.name for x in b.plugins.values() if isinstance(x.instance, Filter | Scorer | Picker)
        ]
        profiles["default"] = [(n, 1.0) for n in members]
        b.notes.append("added profile 'default' with every filter, scorer and picker")
    for profile in config.scheduling_profiles:
        if not profile.name:
            raise ConfigError("schedulingProfiles: a profile has no name")
        if profile.name in profiles:
            raise ConfigError(f"schedulingProfiles: two profiles are named {profile.name!r}")
        refs: list[tuple[str, float]] = []
        for ref in profile.plugins:
            built = b.plugins.get(ref.plugin_ref)
            if built is None:
                raise ConfigError(
                    f"schedulingProfiles: profile {profile.name!r} refers to plugin "
                    f"{ref.plugin_ref!r}, which is not in plugins"
                )
            is_scorer = isinstance(built.instance, Scorer)
            if ref.weight is not None and not is_scorer:
                raise ConfigError(
                    f"schedulingProfiles: profile {profile.name!r}: plugin {ref.plugin_ref!r} "
                    "has a weight but is not a scorer"
                )
            if not isinstance(built.instance, Filter | Scorer | Picker):
                _log.info(
                    "profile %r: plugin %r is not a filter, scorer or picker; it runs where "
                    "its kind runs",
                    profile.name,
                    ref.plugin_ref,
                )
                continue
            refs.append((ref.plugin_ref, 1.0 if ref.weight is None else ref.weight))
        profiles[profile.name] = refs
    pickers = [x.name for x in b.of_kind(Picker)]
    if not pickers:
        pickers = [b.ensure(DEFAULT_PICKER).name]
    for name, refs in profiles.items():
        if not any(isinstance(b.plugins[r].instance, Picker) for r, _ in refs):
            refs.append((pickers[0], 1.0))
            b.notes.append(f"profile {name!r}: added picker {pickers[0]!r}")
    return profiles


def _handler(b: PluginSet, profile_count: int) -> BuiltPlugin:
    handlers = b.of_kind(ProfileHandler)
    if len(handlers) > 1:
        names = ", ".join(repr(h.name) for h in handlers)
        raise ConfigError(f"plugins: only one profile handler may be configured, found {names}")
    if not handlers:
        if profile_count > 1:
            raise ConfigError(
                f"schedulingProfiles: {profile_count} profiles need a profile handler "
                "(for example disagg-profile-handler) in plugins"
            )
        return b.ensure(DEFAULT_HANDLER)
    handler = handlers[0]
    if handler.type == DEFAULT_HANDLER and profile_count > 1:
        raise ConfigError(
            f"plugin {handler.name!r}: single-profile-handler cannot run {profile_count} "
            "profiles; use a handler that picks among them (disagg-profile-handler)"
        )
    return handler


def _parsers(b: PluginSet) -> ParserSet:
    config = b.loaded.config
    refs: list[str]
    if config.request_handler is not None and config.request_handler.parsers:
        refs = [r.plugin_ref for r in config.request_handler.parsers]
        if config.parser is not None:
            _log.warning("parser is ignored: requestHandler.parsers is set")
    elif config.parser is not None:
        _log.warning("parser is deprecated; use requestHandler.parsers")
        refs = [config.parser.plugin_ref]
    else:
        refs = list(DEFAULT_PARSERS)
    parsers: list[Parser] = []
    seen_types: set[str] = set()
    for ref in refs:
        built = b.plugins.get(ref) or b.ensure(ref)
        if not isinstance(built.instance, Parser):
            raise ConfigError(f"requestHandler.parsers: plugin {ref!r} is not a parser")
        if built.type in seen_types:
            _log.warning("requestHandler.parsers: a second %r parser is ignored", built.type)
            continue
        seen_types.add(built.type)
        parsers.append(built.instance)
    return ParserSet(parsers)


def _saturation(b: PluginSet) -> SaturationDetector:
    config = b.loaded.config
    ref = None
    if config.flow_control is not None and config.flow_control.saturation_detector is not None:
        ref = config.flow_control.saturation_detector.plugin_ref
    elif config.saturation_detector is not None:
        ref = config.saturation_detector.plugin_ref
    built = b.ensure(DEFAULT_SATURATION) if ref is None else b.plugins.get(ref)
    if built is None:
        raise ConfigError(f"saturationDetector: plugin {ref!r} is not in plugins")
    if not isinstance(built.instance, SaturationDetector):
        raise ConfigError(f"saturationDetector: plugin {built.name!r} is not a saturation detector")
    return built.instance


def _default_producers(b: PluginSet) -> None:
    """A default producer for every consumed key nobody produces, and for what those consume
    in turn (the prefix producer needs the token producer), until nothing is missing."""
    produced = {k for x in b.plugins.values() for k in _produced(x.instance)}
    checked: set[str] = set()
    while unchecked := [x for name, x in b.plugins.items() if name not in checked]:
        checked.update(x.name for x in unchecked)
        for built in unchecked:
            _add_producers(b, built, produced)


def _add_producers(b: PluginSet, built: BuiltPlugin, produced: set[DataKey[Any]]) -> None:
    for key in _consumed(built.instance):
        if key in produced:
            continue
        type_name = b.registry.producer_for(key)
        if type_name is None:
            note = f"plugin {built.name!r} reads {key.name!r}, which nothing produces"
            b.notes.append(note)
            _log.warning("%s: it will never find any", note)
            produced.add(key)  # say it once
            continue
        producer = b.ensure(type_name)
        produced.update(_produced(producer.instance))


def _produced(plugin: object) -> tuple[DataKey[Any], ...]:
    return plugin.produces if isinstance(plugin, Produces) else ()


def _consumed(plugin: object) -> tuple[DataKey[Any], ...]:
    return plugin.consumes if isinstance(plugin, Consumes) else ()


def _read(plugin: object) -> tuple[DataKey[Any], ...]:
    return plugin.reads if isinstance(plugin, Reads) else ()


def _bind(
    b: PluginSet, inflight: InFlightView, pool: PoolView | None, metrics: PluginMetrics
) -> None:
    plugins = {name: x.instance for name, x in b.plugins.items()}
    handle = PluginHandle(plugins, inflight, pool, metrics)
    for built in b.plugins.values():
        if not isinstance(built.instance, Binds):
            continue
        try:
            built.instance.bind(handle)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001  a user plugin's bind: report, do not crash
            raise ConfigError(f"plugin {built.name!r}: {type(exc).__name__}: {exc}") from None


def _ordered_producers(b: PluginSet) -> list[BuiltPlugin]:
    """Producers in configuration order, moved after the producers of what they consume."""
    waits = {x.name for x in b.of_kind(AsyncDataProducer)}
    pending = [
        x for x in b.plugins.values() if x.name in waits or isinstance(x.instance, DataProducer)
    ]
    makers: dict[DataKey[Any], set[str]] = {}
    for x in pending:
        for key in _produced(x.instance):
            makers.setdefault(key, set()).add(x.name)
    ordered: list[BuiltPlugin] = []
    done: set[str] = set()
    while pending:
        for x in pending:
            inputs = (*_consumed(x.instance), *_read(x.instance))
            needs = {m for k in inputs for m in makers.get(k, ()) if m != x.name}
            if needs <= done:
                ordered.append(x)
                done.add(x.name)
                pending = [p for p in pending if p is not x]
                break
        else:
            names = ", ".join(repr(p.name) for p in pending)
            raise ConfigError(f"data producers depend on each other in a cycle: {names}")
    return ordered
