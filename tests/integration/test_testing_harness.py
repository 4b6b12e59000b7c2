"""ExtProcHarness drives the router's real ext-proc servicer over gRPC on a free port."""

from __future__ import annotations

import json
import random

from llmd_router.datalayer import EndpointStore
from llmd_router.observability.metrics import RouterMetrics
from llmd_router.requestcontrol import Director
from llmd_router.testing import endpoints, pipeline
from llmd_router.testing.extproc import ExtProcHarness

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = {":path": "/v1/chat/completions", ":method": "POST", "x-request-id": "r1"}


async def test_an_exchange_returns_the_decision_or_the_refusal():
    store = EndpointStore(endpoints(2))
    director = Director(
        store,
        pipeline("plugins: [{type: random-picker}]\n", inflight=store.inflight),
        RouterMetrics(),
        rng=random.Random(1),
    )
    async with ExtProcHarness(director) as harness:
        decision = await harness.exchange(HEADERS, BODY)
        assert decision.kind == "request_headers"
        assert decision.set_headers["x-gateway-destination-endpoint"] in {
            "10.0.0.0:8000",
            "10.0.0.1:8000",
        }
        assert store.inflight.total().requests == 1  # routed, its response still to come
        buffered = await harness.exchange(HEADERS, BODY, mode="buffered")
        assert buffered.kind == "request_body" and buffered.set_headers
        refused = await harness.exchange(HEADERS, b"{not json")
        assert refused.kind == "immediate_response" and refused.status == 400
    assert store.inflight.total().requests == 0  # the streams ended with the harness
