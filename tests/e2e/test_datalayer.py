"""Live signals and live endpoints, end to end: simulators, the router and a real Envoy.

A server that dies, or whose metrics fail, stops getting new requests once its signals are
stale, and gets them again when it recovers; the endpoints file is edited under load and the
router follows within a second, letting requests on a removed server finish."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING

import httpx

from llmd_sim.config import FaultConfig
from tests.e2e.conftest import MODEL, write_endpoints
from tests.waiting import eventually

if TYPE_CHECKING:
    from pathlib import Path

    from tests.e2e.conftest import Stack, StartStack

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
STALE_S = 0.4


def fresh_names(stack: Stack) -> set[str]:
    router = stack.app.router
    return {e.name for e in router.store.all() if router.store.is_fresh(e, time.monotonic())}


async def send(http: httpx.AsyncClient, stack: Stack, count: int) -> list[int]:
    """``count`` requests, each with a prompt of its own: the default profile's prefix affinity
    would send a repeated prompt back where it went, and these tests watch load spread."""
    statuses = []
    for _ in range(count):
        chat = {**CHAT, "messages": [{"role": "user", "content": f"hi {next(_PROMPTS)}"}]}
        response = await http.post(f"{stack.url}/v1/chat/completions", json=chat)
        statuses.append(response.status_code)
    return statuses


_PROMPTS = itertools.count()


async def test_a_killed_server_gets_no_new_requests_after_one_staleness_period(
    start_stack: StartStack,
):
    stack = await start_stack(servers=3, router={"metrics_staleness_s": STALE_S})
    await eventually(lambda: fresh_names(stack) == {"sim-0", "sim-1", "sim-2"})
    await stack.fleet.servers[0].close()
    await asyncio.sleep(STALE_S + 0.1)  # one staleness period (and a poll of slack)
    assert fresh_names(stack) == {"sim-1", "sim-2"}
    async with httpx.AsyncClient(timeout=10) as http:
        # A request sent to the dead server would fail (Envoy cannot connect): none does.
        assert await send(http, stack, 30) == [200] * 30
        debug = f"http://127.0.0.1:{stack.app.router.metrics_server.port}/debug/endpoints"
        rows = {r["name"]: r for r in (await http.get(debug)).json()}
    assert rows["sim-0"]["fresh"] is False and rows["sim-0"]["signalError"]
    assert rows["sim-1"]["fresh"] is True and rows["sim-1"]["signalError"] is None


async def test_a_server_whose_scrapes_fail_is_avoided_then_readmitted(start_stack: StartStack):
    stack = await start_stack(servers=3, router={"metrics_staleness_s": STALE_S})
    await eventually(lambda: len(fresh_names(stack)) == 3)
    sick = stack.fleet.servers[0]
    sick.set_faults(FaultConfig(metrics="missing"))  # /metrics answers 404
    await asyncio.sleep(STALE_S + 0.1)
    assert "sim-0" not in fresh_names(stack)
    before = stack.served()[0]
    async with httpx.AsyncClient(timeout=10) as http:
        assert await send(http, stack, 20) == [200] * 20
        assert stack.served()[0] == before  # it still serves, but is not offered
        sick.set_faults(FaultConfig())
        await eventually(lambda: "sim-0" in fresh_names(stack), within=2.0)
        assert await send(http, stack, 30) == [200] * 30
    # Idle servers tie, and ties are broken at random: 30 requests miss sim-0 with
    # probability (2/3)^30, about 5e-6.
    assert stack.served()[0] > before
    errors = stack.app.router.metrics.registry.get_sample_value(
        "llm_d_epp_datalayer_poll_errors_total", {"source_type": "metrics-data-source"}
    )
    assert errors is not None and errors > 0


async def test_a_server_added_to_the_endpoints_file_takes_traffic_within_a_second(
    start_stack: StartStack, tmp_path: Path
):
    path = tmp_path / "endpoints.yaml"
    stack = await start_stack(servers=3, endpoints_file=path, listed=2)
    router = stack.app.router
    assert sorted(e.name for e in router.store.all()) == ["sim-0", "sim-1"]
    write_endpoints(path, stack.fleet)  # all three
    edited = time.monotonic()
    await eventually(lambda: "sim-2" in fresh_names(stack))
    assert time.monotonic() - edited < 1.0
    async with httpx.AsyncClient(timeout=10) as http:
        assert await send(http, stack, 30) == [200] * 30
    assert stack.served()[2] > 0


async def test_a_removed_server_finishes_its_requests_and_gets_no_new_ones(
    start_stack: StartStack, tmp_path: Path
):
    path = tmp_path / "endpoints.yaml"
    stack = await start_stack(servers=3, endpoints_file=path, listed=1)  # only sim-0
    await eventually(lambda: fresh_names(stack) == {"sim-0"})
    long_chat = {**CHAT, "max_tokens": 200, "stream": True}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream(
            "POST", f"{stack.url}/v1/chat/completions", json=long_chat
        ) as streaming:
            assert streaming.status_code == 200
            chunks = streaming.aiter_bytes()
            first = await anext(chunks)
            assert first
            write_endpoints(path, stack.fleet, count=2, skip=1)  # sim-0 leaves, 1 and 2 come
            await eventually(lambda: "sim-0" not in {e.name for e in stack.app.router.store.all()})
            await eventually(lambda: fresh_names(stack) == {"sim-1", "sim-2"})
            new = await send(http, stack, 10)
            rest = b"".join([chunk async for chunk in chunks])
        assert b"[DONE]" in first + rest  # the request on the removed server finished
        assert new == [200] * 10
    assert stack.served()[0] == 1 and stack.served()[1] + stack.served()[2] == 10
