"""Every background loop of a running router is owned: killing any one of them is reported
(logged with its traceback, counted on /debug/tasks) and the loop comes back; a loop that keeps
dying turns the router's readiness off."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmd_router.app import Router
from llmd_router.datalayer import Endpoint
from llmd_router.testing import HEADER, local_options
from tests.waiting import eventually

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from llmd_router.datalayer.interfaces import DiscoverySink
    from llmd_router.tasks import Loop
    from tests.integration.conftest import StartSim

MODULE = __name__


class DiesAfterSync:
    """A discovery plugin (by import path) that fails once it has reported the pool, every
    time it runs: a bug that only a restart papers over."""

    runs = 0

    def __init__(self, name: str, params: Any) -> None:
        self.name = name

    async def run(self, sink: DiscoverySink) -> None:
        type(self).runs += 1
        sink.upsert(Endpoint("a", "127.0.0.1", 9))
        sink.synced()
        await asyncio.sleep(0.01)
        raise ConnectionResetError("watch stream reset by the API server")


def restarted_once(loop: Loop) -> bool:
    return loop.restarts == 1 and loop.state == "running"


async def tasks_page(router: Router) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{router.metrics_server.port}/debug/tasks"
        page: dict[str, Any] = (await http.get(url)).json()
    return page


async def readiness(router: Router) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.grpc.health_port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service="readiness"))
    return int(reply.status)


async def test_each_loop_killed_is_reported_and_restarted(
    tmp_path: Path, start_sim: StartSim, caplog: pytest.LogCaptureFixture
):
    sim = await start_sim()
    config = tmp_path / "epp.yaml"
    config.write_text(HEADER + "plugins: [{type: queue-scorer}]\n")
    router = Router(
        local_options(
            endpoints=(Endpoint("sim", "127.0.0.1", sim.port),),
            config_file=config,
            config_poll_s=0.02,
            completion_source="access-log",  # the sweep loop runs
        )
    )
    await router.start()
    try:
        assert router.tasks is not None
        loops = router.tasks.loops
        names = ["discovery", "collect default/sim", "sweep", "config-watch"]
        assert sorted(loops) == sorted(names)
        for name in names:
            loop = loops[name]
            assert loop.task is not None
            loop.task.cancel()  # killed from outside: not how its owner stops it
            await eventually(functools.partial(restarted_once, loop))
            assert f"background loop {name!r} failed" in caplog.text
        page = await tasks_page(router)
        assert page["ready"] is True
        assert {n: (s["restarts"], s["state"]) for n, s in page["loops"].items()} == dict.fromkeys(
            names, (1, "running")
        )
        assert page["loops"]["sweep"]["lastError"] == "cancelled from outside its owner"
        # The restarted loops do their work: the collector polls, the watcher reloads.
        polls = router.collector.polls
        await eventually(lambda: router.collector.polls > polls + 2)
        config.write_text(HEADER + "plugins: [{type: kv-cache-utilization-scorer}]\n")
        await eventually(lambda: "kv-cache-utilization-scorer" in router.pipeline.plugins)
        assert await readiness(router) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await router.stop(0)


async def test_a_loop_that_keeps_failing_turns_readiness_off(caplog: pytest.LogCaptureFixture):
    DiesAfterSync.runs = 0
    config = (
        HEADER
        + f"plugins: [{{type: '{MODULE}:DiesAfterSync', name: flaky}}, {{type: random-picker}}]\n"
        + "dataLayer: {discovery: {pluginRef: flaky}, injectDefaults: false}\n"
    )
    router = Router(local_options(config_text=config))
    await router.start()  # its first sync comes: the router starts
    try:
        assert router.ready and [e.name for e in router.store.all()] == ["a"]
        await eventually(lambda: "ConnectionResetError: watch stream reset" in caplog.text)
        # Restarted with back-off (0.1 s, doubling), then given up after the sixth failure.
        await eventually(lambda: not router.ready, within=10)
        assert DiesAfterSync.runs == 6
        assert "its 'discovery' loop was given up" in caplog.text
        assert await readiness(router) == health_pb2.HealthCheckResponse.NOT_SERVING
        page = await tasks_page(router)
        assert page["ready"] is False
        assert page["loops"]["discovery"]["state"] == "given up"
        assert page["loops"]["discovery"]["restarts"] == 5
        assert [e.name for e in router.store.all()] == ["a"]  # the endpoints known stay
    finally:
        await router.stop(0)
