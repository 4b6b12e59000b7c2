"""A real vLLM: it serves the tiny model and exposes the metrics the router reads, and the router
(with its Envoy) reads them and routes to it.

Needs ``scripts/install-vllm`` (``.ci/run`` runs it); the module is skipped without it. vLLM
starts once for the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from llmd_router.app import EnvoyOptions, Standalone
from llmd_router.datalayer import Endpoint
from llmd_router.proxy.bootstrap import ProxyConfig
from llmd_router.testing import local_options
from llmd_sim.config import FaultConfig
from tests.realvllm import BLOCK_SIZE, MODEL_NAME, RealVllm, vllm_python
from tests.waiting import eventually

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.conftest import StartSim

if vllm_python() is None:
    pytest.skip(
        "no real vLLM: run scripts/install-vllm (or set LLMD_VLLM_PYTHON)",
        allow_module_level=True,
    )

# Start-up (about a minute, up to 240 s) counts against the first test's timeout.
pytestmark = [pytest.mark.realvllm, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def vllm() -> Iterator[RealVllm]:
    with RealVllm() as server:
        yield server


async def test_real_vllm_serves_and_exposes_metrics(vllm: RealVllm):
    assert vllm.address == "127.0.0.1"
    assert vllm.url == f"http://127.0.0.1:{vllm.port}"
    async with httpx.AsyncClient(base_url=vllm.url, timeout=30.0) as http:
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        text = metrics.text
        assert "vllm:num_requests_waiting" in text
        assert "vllm:kv_cache_usage_perc" in text
        cache_info = [
            line for line in text.splitlines() if line.startswith("vllm:cache_config_info{")
        ]
        assert len(cache_info) == 1, cache_info
        assert f'block_size="{BLOCK_SIZE}"' in cache_info[0]

        models = await http.get("/v1/models")
        assert models.status_code == 200
        assert [m["id"] for m in models.json()["data"]] == [MODEL_NAME]

        chat = await http.post(
            "/v1/chat/completions",
            json={
                "model": MODEL_NAME,
                "messages": [{"role": "user", "content": "Hello there"}],
                "max_tokens": 5,
            },
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["usage"]["completion_tokens"] <= 5


async def test_the_router_reads_vllms_metrics_and_routes_to_it(vllm: RealVllm, start_sim: StartSim):
    # Beside the real server, a simulator whose /metrics fails: once the real server's page has
    # been read, only it is fresh, so every request must go to it.
    sim = await start_sim()
    sim.set_faults(FaultConfig(metrics="missing"))
    real = Endpoint("vllm", vllm.address, vllm.port, labels={"llm-d.ai/engine-type": "vllm"})
    app = Standalone(
        local_options(
            endpoints=(real, Endpoint("sim", "127.0.0.1", sim.port)), metrics_staleness_s=0.5
        ),
        EnvoyOptions(proxy=ProxyConfig(listen_host="127.0.0.1", listen_port=0, admin_port=0)),
    )
    await app.start()
    store = app.router.store

    def current() -> Endpoint:
        snapshot = store.by_id(real.id)
        assert snapshot is not None
        return snapshot

    try:
        await eventually(lambda: current().metrics.updated_at > 0, within=10)
        assert current().metrics.cache_block_size == BLOCK_SIZE
        assert current().metrics.cache_num_blocks > 0
        assert current().signal_error == ""
        async with httpx.AsyncClient(timeout=60.0) as http:
            for _ in range(4):
                response = await http.post(
                    f"{app.url}/v1/chat/completions",
                    json={
                        "model": MODEL_NAME,
                        "messages": [{"role": "user", "content": "Hello there"}],
                        "max_tokens": 3,
                    },
                )
                assert response.status_code == 200, response.text
                assert response.json()["model"] == MODEL_NAME
        assert sum(sim.engine.statistics().finished.values()) == 0
        # Envoy's access log reports each end.
        await eventually(lambda: store.inflight.load(real.key).requests == 0)
    finally:
        await app.stop(0)
