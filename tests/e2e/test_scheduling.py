"""Scheduling configuration through a real Envoy: explanations, session tokens delivered to the
client, debug pages, and configuration reloads under load."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Literal

import httpx
import pytest

from tests.e2e.conftest import MODEL, StartStack

if TYPE_CHECKING:
    from pathlib import Path

Mode = Literal["buffered", "full-duplex"]
MODES: list[Mode] = ["buffered", "full-duplex"]
HEAD = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
CHAT = json.dumps(
    {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}
).encode()


async def chat(
    http: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.post(
        f"{url}/v1/chat/completions",
        content=CHAT,
        headers={"content-type": "application/json", **(headers or {})},
    )


@pytest.mark.parametrize("mode", MODES)
async def test_a_debug_request_gets_its_decision_explained(start_stack: StartStack, mode: Mode):
    stack = await start_stack(mode=mode, router={"explain_decisions": 50})
    router = stack.app.router
    async with httpx.AsyncClient(timeout=10) as http:
        plain = await chat(http, stack.url)
        asked = await chat(http, stack.url, {"x-llmd-debug": "1"})
        assert plain.status_code == asked.status_code == 200
        assert "x-llmd-decision" not in plain.headers
        explained = json.loads(asked.headers["x-llmd-decision"])
        keys = {e.key for e in router.store.all()}
        assert explained["endpoint"] in keys
        candidates = explained["profiles"]["default"]["candidates"]
        assert {c["endpoint"] for c in candidates} == keys
        for candidate in candidates:
            assert set(candidate["scores"]) == {
                "queue-scorer",
                "kv-cache-utilization-scorer",
                "prefix-cache-scorer",
            }
            raw, weighted = candidate["scores"]["queue-scorer"]
            assert weighted == pytest.approx(2 * raw)
        # The same prompt a second time: it goes where the first went, which holds its prefix.
        prefix = {c["endpoint"]: c["scores"]["prefix-cache-scorer"] for c in candidates}
        assert prefix.pop(explained["endpoint"]) == [1.0, 3.0]
        assert set(map(tuple, prefix.values())) == {(0.0, 0.0)}
        # ... and the explanation says why: blocks matched of the prompt's, per candidate.
        key = "PrefixCacheMatchInfoDataKey/approx-prefix-cache-producer"
        blocks = {c["endpoint"]: c["data"][key] for c in candidates}
        (total,) = {t for _, t in blocks.values()}
        assert blocks.pop(explained["endpoint"]) == [total, total] and total >= 1
        assert set(map(tuple, blocks.values())) == {(0, total)}

        debug = f"http://127.0.0.1:{router.metrics_server.port}/debug"
        decisions = (await http.get(f"{debug}/decisions")).json()
        assert len(decisions) == 2 and decisions[0]["endpoint"] == explained["endpoint"]
        for _ in range(100):  # each simulator's /metrics is polled every 50 ms
            endpoints = (await http.get(f"{debug}/endpoints")).json()
            if all(e["fresh"] for e in endpoints):
                break
            await asyncio.sleep(0.02)
        assert {e["endpoint"] for e in endpoints} == keys
        assert all(0 <= e["metricsAgeSeconds"] < 2 and e["fresh"] for e in endpoints)
        assert all(e["metrics"]["cacheBlockSize"] > 0 for e in endpoints)
        plugins = (await http.get(f"{debug}/plugins")).json()
        assert plugins["queue-scorer"]["kinds"] == ["Scorer"]
        index = (await http.get(f"{debug}/prefix")).json()["producers"]
        approx = index["approx-prefix-cache-producer"]
        assert approx["type"] == "approx-prefix-cache-producer" and approx["requests"] == 2
        assert approx["pods"] == [
            {
                "pod": explained["endpoint"],
                "blocks": total,
                "capacity": approx["pods"][0]["capacity"],
            }
        ]
        assert approx["entries"] == total and approx["approxBytes"] > 0
        assert approx["hitRatio"] == pytest.approx(0.5)  # none the first time, all the second
        metrics = (await http.get(f"http://127.0.0.1:{router.metrics_server.port}/metrics")).text
        labels = (
            'plugin_name="approx-prefix-cache-producer",plugin_type="approx-prefix-cache-producer"'
        )
        assert f"llm_d_epp_prefix_indexer_size{{{labels}}} {float(total)}" in metrics
        assert f"llm_d_epp_prefix_indexer_hit_ratio_count{{{labels}}} 2.0" in metrics
        assert f"inference_extension_prefix_indexer_size {float(total)}" in metrics
        config = (await http.get(f"{debug}/config")).json()
        assert config["profileHandler"] == "single-profile-handler"


async def test_without_the_flag_nothing_is_explained(start_stack: StartStack):
    stack = await start_stack()
    async with httpx.AsyncClient(timeout=10) as http:
        asked = await chat(http, stack.url, {"x-llmd-debug": "1"})
        assert asked.status_code == 200 and "x-llmd-decision" not in asked.headers
        port = stack.app.router.metrics_server.port
        missing = await http.get(f"http://127.0.0.1:{port}/debug/decisions")
        assert missing.status_code == 404


SESSION = HEAD + (
    "plugins: [{type: session-affinity-scorer}, {type: random-picker}]\n"
    "schedulingProfiles:\n- name: default\n  plugins:\n"
    "  - {pluginRef: session-affinity-scorer}\n  - {pluginRef: random-picker}\n"
)


@pytest.mark.parametrize("mode", MODES)
async def test_the_session_token_reaches_the_client_and_pins_the_session(
    start_stack: StartStack, mode: Mode
):
    # A random picker would spread the requests; the session scorer must not let it.
    session = HEAD + (
        "plugins: [{type: session-affinity-scorer}]\n"
        "schedulingProfiles:\n- name: default\n  plugins: [{pluginRef: session-affinity-scorer}]\n"
    )
    stack = await start_stack(
        mode=mode, router={"config_text": session, "allow_experimental_plugins": True}
    )
    async with httpx.AsyncClient(timeout=10) as http:
        first = await chat(http, stack.url)
        token = first.headers["x-session-token"]
        before = stack.served()
        for _ in range(12):
            again = await chat(http, stack.url, {"x-session-token": token})
            assert again.status_code == 200 and again.headers["x-session-token"] == token
    gained = [after - b for after, b in zip(stack.served(), before, strict=True)]
    assert sorted(gained) == [0, 0, 12]


async def test_the_configuration_reloads_ten_times_under_load(
    start_stack: StartStack, tmp_path: Path
):
    """Requests keep flowing while the configuration file changes ten times (with invalid
    versions in between, which are refused); none fails."""
    path = tmp_path / "epp.yaml"
    configs = [
        HEAD + "plugins: [{type: queue-scorer}, {type: random-picker}]\n",
        HEAD + "plugins: [{type: active-request-scorer}]\n",
    ]
    broken = HEAD + "plugins: [{type: queue-scorer, parameters: {bogus: 1}}]\n"
    path.write_text(configs[0])
    stack = await start_stack(
        router={"config_file": path, "config_poll_s": 0.05}, sim={"time-scale": 0.05}
    )
    router = stack.app.router
    reloads = router.metrics.config_reloads
    stop = asyncio.Event()
    statuses: list[int] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            statuses.append((await chat(http, stack.url)).status_code)

    async with httpx.AsyncClient(timeout=10) as http:
        clients = [asyncio.create_task(client(http)) for _ in range(6)]
        for i in range(10):
            await asyncio.sleep(0.2)
            if i % 3 == 2:  # an invalid version first: it must be refused, nothing else changes
                path.write_text(broken)
                errors = i // 3 + 1
                await wait_for(lambda errors=errors: reloads.labels("error")._value.get() >= errors)
            path.write_text(configs[(i + 1) % 2] + f"# version {i}\n")
            await wait_for(lambda i=i: reloads.labels("success")._value.get() >= i + 1)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*clients)
    assert reloads.labels("success")._value.get() == 10
    assert reloads.labels("error")._value.get() == 3
    assert len(statuses) > 60 and set(statuses) == {200}
    assert "# version 9" in router.director.pipeline.loaded.text  # the last version runs
    await asyncio.sleep(0.1)
    assert router.store.inflight.total().requests == 0


async def wait_for(condition, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
