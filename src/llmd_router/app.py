"""The composition root: options in, a running router out.

``Router`` is the Endpoint Picker: endpoint store, the plugin pipeline built from the
configuration, the director, the ext-proc and health gRPC servers, and the metrics port (with the
debug pages). A configuration file is watched: when it changes (or on ``reload()``, which the CLI
calls on SIGHUP) the new configuration is built and checked completely, then swapped in one
assignment; one that fails keeps the old one serving. ``Standalone`` adds the Envoy it
configures and supervises. Nothing here is global: every object is built from the options and
owned by its parent.

Start order: metrics port, gRPC servers (not yet ready), then readiness once endpoints are known;
for Standalone, the router first, then Envoy (so Envoy never sends to a router that is not
listening). Stop order is the reverse: Envoy stops taking traffic, then the router lets open
streams finish (``grace``), then the metrics port closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmd_router.config import ConfigError, LoadedConfig, load_config, load_config_file
from llmd_router.config.watch import Fingerprint, fingerprint, watch_file
from llmd_router.datalayer import Endpoint, EndpointStore
from llmd_router.datalayer.collector import Collector
from llmd_router.datalayer.discovery import FileDiscovery, StaticDiscovery
from llmd_router.extproc.server import ExtProcServer, TlsConfig
from llmd_router.extproc.servicer import AccessLogServicer, ExtProcServicer
from llmd_router.observability.http import MetricsServer
from llmd_router.observability.metrics import RouterMetrics
from llmd_router.pipeline.builder import Pipeline, build_pipeline
from llmd_router.plugins.builtin import builtin_registry
from llmd_router.proxy.bootstrap import ProxyConfig, build_bootstrap
from llmd_router.proxy.supervisor import EnvoyProcess
from llmd_router.requestcontrol import CompletionSource, Director
from llmd_router.requestcontrol.explain import DecisionLog
from llmd_router.requestcontrol.objectives import ModelResources

if TYPE_CHECKING:
    from pathlib import Path

    from llmd_router.datalayer.interfaces import EndpointDiscovery

__all__ = ["EnvoyOptions", "Router", "RouterOptions", "Standalone"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RouterOptions:
    # Where endpoints come from: a fixed list, a watched endpoints file, or (neither given)
    # the configuration's dataLayer.discovery plugin.
    endpoints: tuple[Endpoint, ...] = ()
    endpoints_file: Path | None = None
    endpoints_poll_s: float = 0.25
    # Model-server signals: polled every refresh interval with a timeout; an endpoint whose
    # signals are older than the staleness threshold is not offered new requests.
    refresh_metrics_interval_s: float = 0.05
    metrics_timeout_s: float = 1.0
    metrics_staleness_s: float = 2.0
    host: str = "0.0.0.0"
    grpc_port: int = 9002
    health_port: int = 9003
    metrics_port: int = 9090
    secure_serving: bool = True
    cert_path: Path | None = None
    health_on_main: bool = False
    max_body_bytes: int = 32 << 20
    pool_name: str = ""
    honour_subset_hint: bool = True
    seed: int | None = None
    # How the router learns that a request ended: "stream" for llm-d's Envoy settings,
    # "access-log" for our buffered bootstrap (Envoy's access log reports each end).
    completion_source: CompletionSource = "stream"
    max_pending_s: float = 3600.0  # access-log: release a request whose end was never reported
    # The EndpointPickerConfig: text, or a file (watched), or neither (the default profile).
    config_text: str | None = None
    config_file: Path | None = None
    config_poll_s: float = 1.0
    allow_experimental_plugins: bool = False
    # Keep the last decisions for /debug/decisions and answer x-llmd-debug: 1 (0: off).
    explain_decisions: int = 0


@dataclass(frozen=True, slots=True)
class EnvoyOptions:
    binary: str | None = None
    concurrency: int | None = None
    log_level: str = "warning"
    proxy: ProxyConfig = field(default_factory=ProxyConfig)


class Router:
    def __init__(self, options: RouterOptions) -> None:
        self.options = options
        self.store = EndpointStore()
        self.metrics = RouterMetrics(options.pool_name)
        self.registry = builtin_registry()
        self._config_seen: Fingerprint = None
        pipeline = self._build(self._load(), previous=None)  # ConfigError: refuse to start
        self.resources = ModelResources()
        self.resources.replace(pipeline.loaded.objectives, pipeline.loaded.rewrites)
        self.discovery = self._discovery(pipeline)
        self.collector = Collector(
            pipeline.sources,
            interval_s=options.refresh_metrics_interval_s,
            timeout_s=options.metrics_timeout_s,
            on_poll_error=self.metrics.poll_failed,
            on_extract_error=self.metrics.extract_failed,
        )
        self._set_staleness(pipeline)
        self.store.on_added = self._endpoint_added
        self.store.on_removed = self._endpoint_removed
        self._discovering: asyncio.Task[None] | None = None
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
        self._watcher: asyncio.Task[None] | None = None
        self.servicer = ExtProcServicer(self.director, max_body_bytes=options.max_body_bytes)
        self._sweeper: asyncio.Task[None] | None = None
        tls = TlsConfig(options.cert_path) if options.secure_serving else None
        self.grpc = ExtProcServer(
            self.servicer,
            host=options.host,
            port=options.grpc_port,
            health_port=options.health_port,
            tls=tls,
            health_on_main=options.health_on_main,
            access_log=AccessLogServicer(self.director),
        )
        debug: dict[str, Any] = {
            "/debug/endpoints": lambda: self.store.describe(time.monotonic()),
            "/debug/plugins": self._describe_plugins,
            "/debug/config": self._resolved_config,
        }
        if decisions is not None:
            debug["/debug/decisions"] = decisions.render
        self.metrics_server = MetricsServer(
            self.metrics.registry, host=options.host, port=options.metrics_port, debug=debug
        )

    # ------------------------------------------------------------------ endpoints

    def _discovery(self, pipeline: Pipeline) -> EndpointDiscovery:
        options = self.options
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

    def _set_staleness(self, pipeline: Pipeline) -> None:
        collecting = pipeline.collects_metrics and self.options.metrics_staleness_s > 0
        self.store.staleness_s = self.options.metrics_staleness_s if collecting else None

    def _endpoint_added(self, endpoint: Endpoint) -> None:
        _log.info("endpoint %s (%s) added", endpoint.id, endpoint.key)
        self.collector.watch(endpoint)

    def _endpoint_removed(self, endpoint: Endpoint) -> None:
        _log.info(
            "endpoint %s (%s) removed; %d requests in flight there finish",
            endpoint.id,
            endpoint.key,
            endpoint.inflight,
        )
        self.collector.unwatch(endpoint)

    async def _start_discovery(self) -> None:
        """Run discovery and wait for its first complete view of the pool. Whatever stops it
        before then (an unreadable endpoints file) is raised."""
        synced = asyncio.Event()
        sink = _StoreSink(self.store, synced)
        self._discovering = asyncio.create_task(self.discovery.run(sink), name="discovery")
        waiter = asyncio.create_task(synced.wait())
        done, _ = await asyncio.wait(
            {self._discovering, waiter}, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            self._discovering.result()  # raises what stopped it
            raise RuntimeError(f"discovery {self.discovery.name!r} ended before its first sync")
        self._discovering.add_done_callback(_report_discovery_end)

    # ------------------------------------------------------------------ configuration

    @property
    def pipeline(self) -> Pipeline:
        """The configuration serving requests (the director's; a reload replaces it)."""
        return self.director.pipeline

    def _load(self) -> LoadedConfig:
        if self.options.config_file is not None:
            self._config_seen = fingerprint(self.options.config_file)  # before reading it
            return load_config_file(self.options.config_file)
        return load_config(self.options.config_text)

    def _build(self, loaded: LoadedConfig, previous: Pipeline | None) -> Pipeline:
        pipeline = build_pipeline(
            loaded,
            self.registry,
            timer=self.metrics.plugin_timer,
            allow_experimental=self.options.allow_experimental_plugins,
            previous=previous,
        )
        for note in pipeline.notes:
            _log.info("configuration %s: %s", loaded.source, note)
        return pipeline

    def reload(self) -> bool:
        """Load, build and swap in the configuration again. On any error the running one
        stays, and the error is logged. Requests being scheduled finish with the
        configuration they started with."""
        try:
            pipeline = self._build(self._load(), previous=self.pipeline)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("error").inc()
            _log.error("configuration not reloaded, the running one stays: %s", exc)
            return False
        if pipeline.discovery is not self.pipeline.discovery:
            _log.warning(
                "dataLayer.discovery changed: discovery is set up at start-up, restart the "
                "router to use the new one; the running discovery stays"
            )
        self.director.pipeline = pipeline
        self.resources.replace(pipeline.loaded.objectives, pipeline.loaded.rewrites)
        self.collector.replace_bindings(pipeline.sources)
        self._set_staleness(pipeline)
        self.metrics.config_reloads.labels("success").inc()
        _log.info("configuration reloaded from %s", pipeline.loaded.source)
        return True

    def _resolved_config(self) -> dict[str, Any]:
        return {**self.pipeline.resolved(), "inferenceResources": self.resources.describe()}

    def _reload_on_change(self) -> None:
        self.reload()

    def _describe_plugins(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, built in self.pipeline.plugins.items():
            entry: dict[str, Any] = {"type": built.type, "kinds": built.kinds()}
            if any(b.source is built.instance for b in self.pipeline.sources):
                entry["collector"] = self.collector.statistics()
            statistics = getattr(built.instance, "statistics", None)
            if callable(statistics):
                entry["state"] = statistics()
            out[name] = entry
        return out

    async def start(self) -> None:
        await self.metrics_server.start()
        try:
            await self.grpc.start()
        except BaseException:
            await self.metrics_server.stop()
            raise
        try:
            await self._start_discovery()
        except BaseException:
            await self._stop_data_layer()
            await self.grpc.stop(0)
            await self.metrics_server.stop()
            raise
        self.metrics.count_ready(lambda: self.store.count_fresh(time.monotonic()))
        if self.options.completion_source == "access-log":
            self._sweeper = asyncio.create_task(self._sweep())
        if self.options.config_file is not None:
            self._watcher = asyncio.create_task(
                watch_file(
                    self.options.config_file,
                    self._reload_on_change,
                    interval_s=self.options.config_poll_s,
                    seen=self._config_seen,
                )
            )
        await self.grpc.set_ready(ready=True)

    async def _sweep(self) -> None:
        interval = min(60.0, self.options.max_pending_s / 4)
        while True:
            await asyncio.sleep(interval)
            self.director.sweep()

    async def stop(self, grace: float = 5.0) -> None:
        await self.grpc.stop(grace)
        for task in (self._sweeper, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sweeper = self._watcher = None
        await self._stop_data_layer()
        await self.metrics_server.stop()

    async def _stop_data_layer(self) -> None:
        if self._discovering is not None:
            self._discovering.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._discovering
            self._discovering = None
        await self.collector.aclose()


class _StoreSink:
    """What discovery writes to: the store, and the first-sync handshake."""

    def __init__(self, store: EndpointStore, synced: asyncio.Event) -> None:
        self._store = store
        self._synced = synced

    def upsert(self, endpoint: Endpoint) -> None:
        self._store.upsert(endpoint)

    def delete(self, endpoint_id: str) -> None:
        self._store.delete(endpoint_id)

    def synced(self) -> None:
        self._synced.set()


def _report_discovery_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    _log.error(
        "endpoint discovery stopped (%s); the endpoints known so far stay",
        error if error is not None else "it returned",
    )


class Standalone:
    """The router plus the Envoy in front of it."""

    def __init__(self, router: RouterOptions, envoy: EnvoyOptions) -> None:
        if envoy.proxy.mode == "buffered":  # the bootstrap closes each stream after routing
            router = dataclasses.replace(router, completion_source="access-log")
        self.router = Router(router)
        self._envoy_options = envoy
        self.envoy: EnvoyProcess | None = None

    def proxy_config(self) -> ProxyConfig:
        """The bootstrap's settings, pointed at this router's actual ports and endpoints."""
        return dataclasses.replace(
            self._envoy_options.proxy,
            epp_port=self.router.grpc.port,
            epp_tls=self.router.options.secure_serving,
            pool=tuple((e.address, e.port) for e in self.router.store.all()),
        )

    async def start(self) -> None:
        await self.router.start()
        options = self._envoy_options
        envoy = EnvoyProcess(
            build_bootstrap(self.proxy_config()),
            binary=options.binary,
            log_level=options.log_level,
            concurrency=options.concurrency,
            on_exit=self.router.director.abandon_pending,
        )
        try:
            await envoy.start()
        except BaseException:
            await self.router.stop(0)
            raise
        self.envoy = envoy

    @property
    def url(self) -> str:
        assert self.envoy is not None
        host = self._envoy_options.proxy.listen_host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{shown}:{self.envoy.listener_port}"

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set or Envoy cannot be kept running."""
        assert self.envoy is not None
        supervisor = asyncio.ensure_future(self.envoy.run())
        waiter = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({supervisor, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if supervisor in done:
                supervisor.result()  # re-raise why Envoy could not be kept running
        finally:
            for task in (supervisor, waiter):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def stop(self, grace: float = 5.0) -> None:
        if self.envoy is not None:
            await self.envoy.stop()
            self.envoy = None
        await self.router.stop(grace)
