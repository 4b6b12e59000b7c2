"""The router's data layer with real servers: discovery plugins, scraping a simulator, reloads."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvloop

from llmd_router.app import Router, RouterOptions
from llmd_router.config import ConfigError
from llmd_router.datalayer import Endpoint, EndpointsError
from llmd_router.testing import local_options
from tests.waiting import eventually

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from llmd_router.datalayer.interfaces import DiscoverySink
    from tests.integration.conftest import StartSim

HEAD = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
MODULE = __name__


class TwoServers:
    """A user discovery plugin (by import path): two endpoints, then one leaves."""

    def __init__(self, name: str, params: Any) -> None:
        self.name = name
        self.sink: DiscoverySink | None = None

    async def run(self, sink: DiscoverySink) -> None:
        self.sink = sink
        sink.upsert(Endpoint("a", "10.0.0.1", 8000))
        sink.upsert(Endpoint("b", "10.0.0.2", 8000))
        sink.synced()
        await _forever()


async def _forever() -> None:
    await asyncio.Event().wait()


def options(**overrides: Any) -> RouterOptions:
    return local_options(**overrides)


@contextlib.asynccontextmanager
async def running(router: Router) -> AsyncIterator[Router]:
    await router.start()
    try:
        yield router
    finally:
        await router.stop(0)


async def test_a_discovery_plugin_by_import_path_feeds_the_store():
    config = (
        HEAD
        + f"plugins: [{{name: mine, type: '{MODULE}:TwoServers'}}]\n"
        + "dataLayer: {discovery: {pluginRef: mine}, injectDefaults: false}\n"
    )
    async with running(Router(options(config_text=config))) as router:
        assert sorted(e.name for e in router.store.all()) == ["a", "b"]
        plugin = router.pipeline.plugins["mine"].instance
        assert plugin.sink is not None
        plugin.sink.delete("default/a")
        assert [e.name for e in router.store.all()] == ["b"]


def test_endpoints_named_twice_are_refused():
    config = (
        HEAD
        + f"plugins: [{{name: mine, type: '{MODULE}:TwoServers'}}]\n"
        + "dataLayer: {discovery: {pluginRef: mine}}\n"
    )
    with pytest.raises(ConfigError, match="name them in one place"):
        Router(options(config_text=config, endpoints=(Endpoint("x", "10.0.0.9", 1),)))


async def test_an_unreadable_endpoints_file_stops_start_up(tmp_path: Path):
    router = Router(options(endpoints_file=tmp_path / "missing.yaml"))
    with pytest.raises(EndpointsError, match="cannot read"):
        await router.start()


async def test_a_simulators_metrics_reach_the_store_and_the_debug_page(start_sim: StartSim):
    sim = await start_sim()
    endpoint = Endpoint("sim", "127.0.0.1", sim.port)
    async with running(Router(options(endpoints=(endpoint,)))) as router:
        await eventually(lambda: fresh(router, endpoint))
        assert latest(router, endpoint).metrics.cache_block_size > 0
        async with httpx.AsyncClient() as http:
            base = f"http://127.0.0.1:{router.metrics_server.port}/debug"
            (row,) = (await http.get(f"{base}/endpoints")).json()
            plugins = (await http.get(f"{base}/plugins")).json()
        assert row["fresh"] is True and row["signalError"] is None
        assert plugins["metrics-data-source"]["collector"]["polls"] > 0


async def test_the_ready_gauge_counts_endpoints_with_fresh_signals(start_sim: StartSim):
    sim = await start_sim()
    live = Endpoint("live", "127.0.0.1", sim.port)
    dead = Endpoint("dead", "127.0.0.1", _closed_port())
    router = Router(options(endpoints=(live, dead), metrics_staleness_s=0.3))

    async def ready() -> dict[str, float]:
        async with httpx.AsyncClient() as http:
            page = (await http.get(f"http://127.0.0.1:{router.metrics_server.port}/metrics")).text
        return {
            line.split("{")[0]: float(line.rsplit(" ", 1)[1])
            for line in page.splitlines()
            if line.startswith(("llm_d_epp_ready_endpoints{", "inference_pool_ready_pods{"))
        }

    async with running(router):
        await eventually(lambda: fresh(router, live))
        assert await ready() == {"llm_d_epp_ready_endpoints": 1, "inference_pool_ready_pods": 1}
        await sim.close()
        await eventually(lambda: not fresh(router, live))
        assert await ready() == {"llm_d_epp_ready_endpoints": 0, "inference_pool_ready_pods": 0}


def latest(router: Router, endpoint: Endpoint) -> Endpoint:
    """The router's current snapshot of ``endpoint``."""
    current = router.store.by_id(endpoint.id)
    assert current is not None
    return current


def fresh(router: Router, endpoint: Endpoint) -> bool:
    return router.store.is_fresh(latest(router, endpoint), time.monotonic())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_reload_changes_what_is_polled(tmp_path: Path, start_sim: StartSim):
    sim = await start_sim()
    endpoint = Endpoint("sim", "127.0.0.1", sim.port)
    path = tmp_path / "epp.yaml"
    path.write_text(HEAD + "plugins: [{type: queue-scorer}]\n")
    router = Router(options(endpoints=(endpoint,), config_file=path, config_poll_s=0.02))
    async with running(router):
        await eventually(lambda: latest(router, endpoint).metrics.updated_at > 0)
        # A path the server does not have: polls fail from the next tick.
        path.write_text(
            HEAD + "plugins: [{type: queue-scorer}, "
            "{type: metrics-data-source, parameters: {path: /nowhere}}]\n"
        )
        await eventually(lambda: "HTTP 404" in latest(router, endpoint).signal_error)
        # Objectives arrive with the configuration file too.
        path.write_text(
            HEAD
            + "plugins: [{type: queue-scorer}]\n---\n"
            + "apiVersion: llm-d.ai/v1alpha2\nkind: InferenceObjective\n"
            + "metadata: {name: batch}\nspec: {priority: -2}\n"
        )
        await eventually(lambda: router.resources.priority("batch") == -2)
        await eventually(lambda: latest(router, endpoint).signal_error == "")


def test_polling_works_on_uvloop_as_the_command_line_runs_it():
    # The command line runs on uvloop, whose transports are not asyncio.Transport subclasses.
    page = b"vllm:num_requests_waiting 3\nvllm:num_requests_running 1\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(page)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(head + page)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def scrape_once() -> tuple[int, str]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        endpoint = Endpoint("e", "127.0.0.1", port)
        router = Router(options(endpoints=(endpoint,)))
        async with server, running(router):
            await eventually(lambda: latest(router, endpoint).metrics.updated_at > 0)
            current = latest(router, endpoint)
        return current.metrics.waiting_queue_size, current.signal_error

    queue, error = uvloop.run(scrape_once())
    assert queue == 3
    assert "kv_cache_usage_perc" in error  # the page lacks it: that signal alone failed
