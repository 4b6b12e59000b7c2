"""The Endpoint Picker: the object graph built from the options, and its lifetime.

``Router`` holds the endpoint store, the pipeline built from the configuration, the director, the
ext-proc and health gRPC servers and the metrics port (with the debug pages). A configuration
file is watched: when it changes (or on ``reload()``, which the CLI calls on SIGHUP) the new
configuration is built and checked completely, then swapped in one assignment; one that fails
keeps the old one serving. Nothing here is global: every object is built from the options and
owned by its parent.

The lifetime (``_serve``) is one coroutine: the servers in an exit stack, every background loop
in one task group, under the task owner (``llmd_router.tasks``)::

    router (lifetime)
    ├── metrics port, gRPC servers          exit stack: stopped in reverse order
    └── task group
        ├── discovery                        ready once it has its first view of the pool
        ├── collect <endpoint id> ...        one per endpoint, while it is in the pool
        ├── sweep                            access-log mode: releases overdue requests
        └── config-watch                     with --config-file

Start order: metrics port, gRPC servers (not yet ready), discovery (its first sync), the
collector's loops, the other loops, then readiness. Stop order: readiness off and the ext-proc
server stops taking streams, letting open ones finish (``grace``); then the loops; then the
sources' connections and the metrics port. A loop that dies is logged with its traceback and
restarted; one that keeps dying is given up and readiness goes off (``/debug/tasks`` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from llmd_router.app.configuration import ConfigurationSource
from llmd_router.config import ConfigError
from llmd_router.config.watch import watch_file
from llmd_router.datalayer import EndpointStore
from llmd_router.datalayer.collector import Collector
from llmd_router.datalayer.discovery import FileDiscovery, StaticDiscovery
from llmd_router.datalayer.interfaces import PollingSource
from llmd_router.datalayer.kvevents.subscriber import KVEventSink, KVEventSubscriber
from llmd_router.extproc.server import ExtProcServer, TlsConfig
from llmd_router.extproc.servicer import AccessLogServicer, ExtProcServicer
from llmd_router.framework import Closes
from llmd_router.observability.http import MetricsServer
from llmd_router.observability.metrics import RouterMetrics
from llmd_router.pipeline import describe_plugins, describe_prefix, resolved_config
from llmd_router.plugins.builtin import builtin_registry
from llmd_router.requestcontrol import Director
from llmd_router.requestcontrol.explain import DecisionLog
from llmd_router.requestcontrol.objectives import ModelResources
from llmd_router.tasks import Lifetime, TaskOwner

if TYPE_CHECKING:
    from llmd_router.app.options import RouterOptions
    from llmd_router.datalayer import Endpoint
    from llmd_router.datalayer.interfaces import EndpointDiscovery
    from llmd_router.pipeline import BuiltPlugin, Pipeline
    from llmd_router.tasks import Ready

__all__ = ["Router"]

_log = logging.getLogger(__name__)


class Router:
    def __init__(self, options: RouterOptions) -> None:
        self.options = options
        self.store = EndpointStore()
        self.metrics = RouterMetrics(options.pool_name)
        self.configuration = ConfigurationSource(
            options,
            builtin_registry(),
            timer=self.metrics.plugin_timer,
            inflight=self.store.inflight,
            pool=self.store,
            metrics=self.metrics,
        )
        pipeline = self.configuration.build(previous=None)  # ConfigError: refuse to start
        self.resources = ModelResources()
        self.resources.replace(pipeline.loaded.objectives, pipeline.loaded.rewrites)
        self.discovery = _discovery(options, pipeline)
        self.collector = Collector(
            self.store,
            pipeline.sources,
            interval_s=options.refresh_metrics_interval_s,
            timeout_s=options.metrics_timeout_s,
            on_poll_error=self.metrics.poll_failed,
            on_extract_error=self.metrics.extract_failed,
        )
        self.kv_events = KVEventSubscriber(self.store.all)
        self.kv_events.configure(_kv_sinks(pipeline))
        self._set_staleness(pipeline)
        self.store.on_added = self._endpoint_added
        self.store.on_removed = self._endpoint_removed
        decisions = DecisionLog(options.explain_decisions) if options.explain_decisions else None
        self.director = Director(
            self.store,
            pipeline,
            self.metrics,
            rng=random.Random(options.seed),
            honour_subset_hint=options.honour_subset_hint,
            completion_source=options.completion_source,
            max_pending_s=options.max_pending_s,
            decisions=decisions,
            resources=self.resources,
        )
        self.servicer = ExtProcServicer(self.director, max_body_bytes=options.max_body_bytes)
        self.grpc = ExtProcServer(
            self.servicer,
            host=options.host,
            port=options.grpc_port,
            health_port=options.health_port,
            tls=TlsConfig(options.cert_path) if options.secure_serving else None,
            health_on_main=options.health_on_main,
            access_log=AccessLogServicer(self.director.settlement),
        )
        self.metrics_server = MetricsServer(
            self.metrics.registry,
            host=options.host,
            port=options.metrics_port,
            debug=self._debug_pages(decisions),
        )
        self.tasks: TaskOwner | None = None  # while running
        self._dropped: list[BuiltPlugin] = []  # plugins reloads replaced, to be closed
        self.ready = False
        self._grace = 5.0
        self._lifetime = Lifetime("router", self._serve)

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        """Serve; return once ready (endpoints known). Raises what stopped start-up."""
        self._grace = 0.0  # a start that fails leaves nothing to finish
        await self._lifetime.start()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, let open streams finish for ``grace`` seconds, stop."""
        self._grace = grace
        await self._lifetime.stop()

    async def _serve(self, ready: Ready, stopping: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as servers:
            await self.metrics_server.start()
            servers.push_async_callback(self.metrics_server.stop)
            servers.callback(self.collector.close)
            servers.callback(self.kv_events.close)
            servers.push_async_callback(self._close_plugins)
            await self.grpc.start()
            servers.push_async_callback(self._stop_serving)
            failure: Exception | None = None
            async with asyncio.TaskGroup() as group:
                owner = self.tasks = TaskOwner(group, on_given_up=self._given_up)
                try:
                    await self._start_loops(owner)
                except Exception as exc:  # noqa: BLE001  raised below, outside the group
                    failure = exc
                else:
                    self.ready = True
                    await self.grpc.set_ready(ready=True)
                    ready()
                    await stopping.wait()
                    await self._stop_serving()  # before the loops: open streams still route
                finally:
                    await owner.close()
            if failure is not None:
                raise failure

    async def _start_loops(self, owner: TaskOwner) -> None:
        await owner.start("discovery", self._discover)
        self.collector.start(owner)
        self.kv_events.start(owner)
        self.metrics.count_ready(lambda: self.store.count_fresh(time.monotonic()))
        if self.options.completion_source == "access-log":
            owner.spawn("sweep", self._sweep)
        if self.options.config_file is not None:
            owner.spawn("config-watch", self._watch_configuration)

    async def _stop_serving(self) -> None:
        self.ready = False
        await self.grpc.stop(self._grace)

    async def _given_up(self, name: str, error: BaseException) -> None:
        """A loop that cannot be kept running: stop declaring the router ready."""
        _log.error("the router is no longer ready: its %r loop was given up", name)
        self.ready = False
        await self.grpc.set_ready(ready=False)

    # ------------------------------------------------------------------ loops

    async def _discover(self, ready: Ready) -> None:
        sink = _StoreSink(self.store, ready)
        await self.discovery.run(sink)
        if not sink.synced_once:
            raise RuntimeError(f"discovery {self.discovery.name!r} ended before its first sync")

    async def _sweep(self, ready: Ready) -> None:
        ready()
        interval = min(60.0, self.options.max_pending_s / 4)
        while True:
            await asyncio.sleep(interval)
            self.director.settlement.sweep()

    async def _watch_configuration(self, ready: Ready) -> None:
        path = self.options.config_file
        assert path is not None
        ready()
        await watch_file(
            path,
            self._reload_on_change,
            interval_s=self.options.config_poll_s,
            seen=self.configuration.seen,
        )

    # ------------------------------------------------------------------ endpoints

    def _set_staleness(self, pipeline: Pipeline) -> None:
        collecting = pipeline.collects_metrics and self.options.metrics_staleness_s > 0
        self.store.staleness_s = self.options.metrics_staleness_s if collecting else None

    def _endpoint_added(self, endpoint: Endpoint) -> None:
        _log.info("endpoint %s (%s) added", endpoint.id, endpoint.key)
        self.collector.watch(endpoint)
        self.kv_events.endpoint_added(endpoint)

    def _endpoint_removed(self, endpoint: Endpoint) -> None:
        _log.info(
            "endpoint %s (%s) removed; %d requests in flight there finish",
            endpoint.id,
            endpoint.key,
            self.store.inflight.load(endpoint.key).requests,
        )
        self.collector.unwatch(endpoint)
        self.kv_events.endpoint_removed(endpoint)

    # ------------------------------------------------------------------ configuration

    @property
    def pipeline(self) -> Pipeline:
        """The configuration serving requests (the director's; a reload replaces it)."""
        return self.director.pipeline

    def reload(self) -> bool:
        """Load, build and swap in the configuration again. On any error the running one
        stays, and the error is logged. Requests being scheduled finish with the
        configuration they started with."""
        try:
            pipeline = self.configuration.build(previous=self.pipeline)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("error").inc()
            _log.error("configuration not reloaded, the running one stays: %s", exc)
            return False
        if pipeline.discovery is not self.pipeline.discovery:
            _log.warning(
                "dataLayer.discovery changed: discovery is set up at start-up, restart the "
                "router to use the new one; the running discovery stays"
            )
        previous, self.director.pipeline = self.director.pipeline, pipeline
        kept = {id(b.instance) for b in pipeline.plugins.values()}
        self._dropped += [b for b in previous.plugins.values() if id(b.instance) not in kept]
        self.resources.replace(pipeline.loaded.objectives, pipeline.loaded.rewrites)
        self.collector.replace_bindings(pipeline.sources)
        self.kv_events.configure(_kv_sinks(pipeline))
        self._set_staleness(pipeline)
        self.metrics.config_reloads.labels("success").inc()
        _log.info("configuration reloaded from %s", pipeline.loaded.source)
        return True

    async def areload(self) -> bool:
        """``reload``, then release what the plugins it dropped held."""
        reloaded = self.reload()
        await self._close_plugins(dropped_only=True)
        return reloaded

    async def _reload_on_change(self) -> None:
        await self.areload()

    async def _close_plugins(self, *, dropped_only: bool = False) -> None:
        """Release what plugins hold: those reloads dropped, and at the end every plugin of
        the serving configuration (data sources are the collector's to close)."""
        plugins, self._dropped = self._dropped, []
        if not dropped_only:
            plugins += list(self.pipeline.plugins.values())
        for built in plugins:
            plugin = built.instance
            if isinstance(plugin, Closes) and not isinstance(plugin, PollingSource):
                try:
                    await plugin.aclose()
                except Exception:  # noqa: BLE001  closing goes on whatever one plugin does
                    _log.exception("plugin %r failed to close", built.name)

    # ------------------------------------------------------------------ debug pages

    def _debug_pages(self, decisions: DecisionLog | None) -> dict[str, Any]:
        pages: dict[str, Any] = {
            "/debug/endpoints": lambda: self.store.describe(time.monotonic()),
            "/debug/plugins": lambda: describe_plugins(self.pipeline, self.collector.statistics()),
            "/debug/prefix": lambda: {
                **describe_prefix(self.pipeline),
                "kvEvents": self.kv_events.statistics(),
            },
            "/debug/config": lambda: {
                **resolved_config(self.pipeline),
                "inferenceResources": self.resources.describe(),
            },
            "/debug/tasks": lambda: {
                "ready": self.ready,
                "loops": self.tasks.statistics() if self.tasks is not None else {},
            },
        }
        if decisions is not None:
            pages["/debug/decisions"] = decisions.render
        return pages


def _kv_sinks(pipeline: Pipeline) -> list[KVEventSink]:
    """The plugins that index the servers' KV events."""
    return [b.instance for b in pipeline.plugins.values() if isinstance(b.instance, KVEventSink)]


def _discovery(options: RouterOptions, pipeline: Pipeline) -> EndpointDiscovery:
    named = options.endpoints or options.endpoints_file is not None
    if named and pipeline.discovery is not None:
        raise ConfigError(
            f"dataLayer.discovery: endpoints come from plugin {pipeline.discovery.name!r} "
            "and from --endpoints/--endpoints-file; name them in one place"
        )
    if options.endpoints_file is not None:
        return FileDiscovery(options.endpoints_file, poll_s=options.endpoints_poll_s)
    if pipeline.discovery is not None:
        return pipeline.discovery
    return StaticDiscovery(options.endpoints)


class _StoreSink:
    """What discovery writes to: the store, and the first-sync handshake."""

    def __init__(self, store: EndpointStore, ready: Ready) -> None:
        self._store = store
        self._ready = ready
        self.synced_once = False

    def upsert(self, endpoint: Endpoint) -> None:
        self._store.upsert(endpoint)

    def delete(self, endpoint_id: str) -> None:
        self._store.delete(endpoint_id)

    def synced(self) -> None:
        self.synced_once = True
        self._ready()
