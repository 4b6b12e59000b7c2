"""Injected faults, by option and at run time through /admin/faults."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.integration.conftest import StartSim, post, raw_exchange

BODY = {"model": "sim-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
STREAM = {**BODY, "max_tokens": 50, "ignore_eos": True, "stream": True}


async def chat(url: str, body: dict[str, object] = BODY, limit: float = 5.0) -> httpx.Response:
    async with httpx.AsyncClient(timeout=limit) as http:
        return await http.post(f"{url}/v1/chat/completions", json=body)


async def read_stream(http: httpx.AsyncClient, url: str, body: dict[str, object]) -> bytes:
    async with http.stream("POST", url, json=body) as response:
        return await response.aread()


async def admin(url: str, method: str, body: object = None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.request(method, f"{url}/admin/faults", json=body)


@pytest.mark.parametrize("status", [500, 503])
async def test_error_fault_answers_with_the_configured_status(start_sim: StartSim, status: int):
    sim = await start_sim(fault_error_rate=1.0, fault_error_status=status)
    response = await chat(sim.url)
    assert response.status_code == status
    assert response.json()["error"]["code"] == status
    # Only inference is affected.
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{sim.url}/health")).status_code == 200


async def test_error_rate_is_a_probability(start_sim: StartSim):
    sim = await start_sim(fault_error_rate=0.5, seed=3)
    statuses = [(await chat(sim.url)).status_code for _ in range(60)]
    assert 10 < statuses.count(500) < 50 and statuses.count(200) + statuses.count(500) == 60


async def test_hang_fault_never_answers_but_the_server_lives(start_sim: StartSim):
    sim = await start_sim(fault_hang_rate=1.0)
    with pytest.raises(httpx.ReadTimeout):
        await chat(sim.url, limit=0.3)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{sim.url}/v1/models")).status_code == 200
    assert sim.engine.statistics().running == 0


async def test_drop_fault_cuts_the_stream_mid_way(start_sim: StartSim):
    sim = await start_sim(fault_drop_rate=1.0, fault_drop_after_tokens=3)
    raw = await raw_exchange(sim.port, post("/v1/chat/completions", json.dumps(STREAM).encode()))
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert raw.count(b"data: ") == 3 + 1  # role chunk + first chunk in one frame, then two more
    assert b"[DONE]" not in raw and not raw.endswith(b"0\r\n\r\n")
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await read_stream(http, f"{sim.url}/v1/chat/completions", STREAM)
    await asyncio.sleep(0.05)
    stats = sim.engine.statistics()
    assert stats.running == 0 and stats.kv_blocks_used == 0 and stats.finished["abort"] == 2


async def test_drop_fault_leaves_whole_responses_alone(start_sim: StartSim):
    sim = await start_sim(fault_drop_rate=1.0)
    assert (await chat(sim.url)).status_code == 200


async def test_metrics_faults(start_sim: StartSim):
    sim = await start_sim()
    async with httpx.AsyncClient(timeout=0.5) as http:
        before = (await http.get(f"{sim.url}/metrics")).text
        assert (await admin(sim.url, "POST", {"metrics": "stale"})).status_code == 200
        await chat(sim.url)
        stale = (await http.get(f"{sim.url}/metrics")).text
        assert stale == before
        await admin(sim.url, "POST", {"metrics": "missing"})
        assert (await http.get(f"{sim.url}/metrics")).status_code == 404
        await admin(sim.url, "POST", {"metrics": "hang"})
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{sim.url}/metrics")
        await admin(sim.url, "POST", {"metrics": "ok"})
        fresh = (await http.get(f"{sim.url}/metrics")).text
    assert fresh != before and 'finished_reason="length"' in fresh


async def test_faults_are_changed_and_cleared_at_run_time(start_sim: StartSim):
    sim = await start_sim()
    assert (await chat(sim.url)).status_code == 200
    changed = await admin(
        sim.url, "POST", {"error_rate": 1.0, "error_status": 503, "health_fail": True}
    )
    assert changed.status_code == 200
    assert changed.json()["error_rate"] == 1.0 and changed.json()["health_fail"] is True
    assert (await chat(sim.url)).status_code == 503
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{sim.url}/health")).status_code == 503
        assert (await http.get(f"{sim.url}/admin/faults")).json()["error_status"] == 503
    cleared = await admin(sim.url, "DELETE")
    assert cleared.json()["error_rate"] == 0.0
    assert (await chat(sim.url)).status_code == 200


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"error_rate": 2}, "between 0.0 and 1.0"),
        ({"metrics": "sometimes"}, "expected one of ok, stale, missing, hang"),
        ({"explode": True}, "unknown fault 'explode'"),
        ([1, 2], "JSON object"),
    ],
    ids=["rate-out-of-range", "bad-metrics-mode", "unknown-fault", "not-an-object"],
)
async def test_bad_fault_settings_are_refused(start_sim: StartSim, body: object, text: str):
    sim = await start_sim()
    response = await admin(sim.url, "POST", body)
    assert response.status_code == 400
    assert text in response.json()["error"]["message"]
    assert (await admin(sim.url, "GET")).json()["error_rate"] == 0.0
