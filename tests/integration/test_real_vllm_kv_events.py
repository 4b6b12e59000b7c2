"""A real vLLM publishing its KV events: the router subscribes to its publisher (discoverPods),
decodes and indexes what it caches, and a prompt it has seen scores on it, not on another
server. Tokens come from the model's own tokenizer in the router (token-producer local).

Needs ``scripts/install-vllm`` (``.ci/run`` runs it); the module is skipped without it.
"""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest

from llmd_router.app import Router
from llmd_router.datalayer import Endpoint
from llmd_router.requestcontrol import Outcome
from llmd_router.testing import local_options
from tests.realvllm import MODEL_DIR, MODEL_NAME, RealVllm, free_port, vllm_python
from tests.waiting import eventually

if vllm_python() is None:
    pytest.skip(
        "no real vLLM: run scripts/install-vllm (or set LLMD_VLLM_PYTHON)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.realvllm, pytest.mark.slow, pytest.mark.timeout(600)]

PRODUCER = "precise-prefix-cache-producer"
SYSTEM = "The quick brown fox jumps over the lazy dog. " * 40


def config(events_port: int) -> str:
    return (
        "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
        "plugins:\n"
        f"- type: token-producer\n  parameters: {{local: {{path: '{MODEL_DIR}'}}}}\n"
        f"- type: {PRODUCER}\n"
        "  parameters:\n"
        "    kvEventsConfig:\n"
        f"      {{discoverPods: true, podDiscoveryConfig: {{socketPort: {events_port}}}}}\n"
        "- type: prefix-cache-scorer\n"
        f"  parameters: {{prefixMatchInfoProducerName: {PRODUCER}}}\n"
        "schedulingProfiles:\n- name: default\n  plugins: [{pluginRef: prefix-cache-scorer}]\n"
    )


async def test_vllms_kv_events_are_indexed_and_its_prefix_scores_on_it():
    events_port = free_port()
    # vLLM binds an endpoint with a wildcard (and would connect to an explicit address): the
    # router dials it, as llm-d's discoverPods does.
    kv = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": f"tcp://*:{events_port}",
        "topic": "kv@vllm@tiny",
    }
    with RealVllm(extra_args=["--kv-events-config", json.dumps(kv)]) as vllm:
        real = Endpoint("vllm", vllm.address, vllm.port)
        other = Endpoint("other", "127.0.0.2", 8000)  # no events: it holds nothing
        router = Router(
            local_options(
                endpoints=(real, other),
                config_text=config(events_port),
                explain_decisions=10,
            )
        )
        await router.start()
        try:
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "hi"},
            ]
            async with httpx.AsyncClient(base_url=vllm.url, timeout=60.0) as http:
                reply = await http.post(
                    "/v1/chat/completions",
                    json={"model": MODEL_NAME, "messages": messages, "max_tokens": 2},
                )
                assert reply.status_code == 200, reply.text

            def blocks() -> int:
                producer = router.pipeline.plugins[PRODUCER].instance
                state = producer.statistics()
                return sum(p["blocks"] for p in state["pods"] if p["pod"] == real.key)

            await eventually(lambda: blocks() >= 32, within=30)  # 1,063 tokens: 33 blocks of 32
            body = msgspec.json.encode({"model": MODEL_NAME, "messages": messages})
            decision, record = await router.director.route_async(
                {":path": "/v1/chat/completions", "x-llmd-debug": "1"},
                body,
                {},
                has_body=True,
                received_at=0.0,
            )
            assert record.endpoint.key == real.key
            explained = json.loads(dict(decision.response_headers)["x-llmd-decision"])
            data = {
                c["endpoint"]: c["data"][f"PrefixCacheMatchInfoDataKey/{PRODUCER}"]
                for c in explained["profiles"]["default"]["candidates"]
            }
            matched, total = data[real.key]
            assert total == 33 and matched >= 32
            assert data[other.key][0] == 0
            router.director.settlement.settle(record, Outcome())
        finally:
            await router.stop(0)
