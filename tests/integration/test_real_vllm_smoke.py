"""A real vLLM starts, serves the tiny model and exposes the metrics the router reads.

Needs ``scripts/install-vllm``; the module is skipped without it. vLLM starts once for the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from tests.realvllm import BLOCK_SIZE, MODEL_NAME, RealVllm, vllm_python

if TYPE_CHECKING:
    from collections.abc import Iterator

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
