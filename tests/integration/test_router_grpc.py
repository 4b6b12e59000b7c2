"""The router's gRPC servers on free ports, driven by a client written from Envoy's protobufs."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmd_router.app import Router
from llmd_router.datalayer import Endpoint
from llmd_router.extproc.server import self_signed_certificate
from llmd_router.testing import local_options
from llmd_router.testing.extproc import (
    ExtProcClient,
    access_log,
    request_body,
    request_headers,
    response_body,
    response_headers,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

BODY = json.dumps(
    {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
).encode()
HEADERS = {":path": "/v1/chat/completions", ":method": "POST", "x-request-id": "req-1"}
ENDPOINTS = tuple(Endpoint(f"e{i}", f"10.0.0.{i + 1}", 8000) for i in range(3))


def local_router(**options: Any) -> Router:
    """A router on free loopback ports, plaintext."""
    return Router(local_options(endpoints=ENDPOINTS, **options))


# Fewest requests in flight: spreads concurrent requests evenly (no metrics needed).
LEAST_LOADED = (
    "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
    "plugins: [{type: active-request-scorer}]\n"
)


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    r = local_router(config_text=LEAST_LOADED)
    await r.start()
    yield r
    await r.stop(0)


@pytest.fixture
async def client(router: Router) -> AsyncIterator[ExtProcClient]:
    async with ExtProcClient(f"127.0.0.1:{router.grpc.port}") as c:
        yield c


def running(router: Router) -> float:
    value = router.metrics.registry.get_sample_value(
        "llm_d_epp_request_running", {"model_name": "m"}
    )
    return value or 0.0


async def settle(router: Router) -> None:
    for _ in range(100):
        if router.store.inflight.total().requests == 0:
            return
        await asyncio.sleep(0.01)


async def test_health_reports_liveness_and_readiness(router: Router):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.grpc.health_port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        for service in ("liveness", "readiness", "", "envoy.service.ext_proc.v3.ExternalProcessor"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        await router.grpc.set_ready(ready=False)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service="readiness"))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        reply = await stub.Check(health_pb2.HealthCheckRequest(service="liveness"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_full_duplex_exchange_from_request_to_response(router: Router, client: ExtProcClient):
    call = client.call()
    await call.send(request_headers(HEADERS))
    await call.send(request_body(BODY[:10], eos=False))
    await call.send(request_body(BODY[10:], eos=True))
    decision = await call.recv()
    assert decision.kind == "request_headers" and decision.clear_route_cache
    destination = decision.set_headers["x-gateway-destination-endpoint"]
    assert destination in {e.key for e in ENDPOINTS}
    assert decision.metadata == {"envoy.lb": {"x-gateway-destination-endpoint": destination}}
    assert decision.set_headers["content-length"] == str(len(BODY))
    body = await call.recv()
    assert body.streamed and body.end_of_stream and body.body == BODY
    assert running(router) == 1
    await call.send(response_headers({":status": "200", "content-type": "text/event-stream"}))
    assert (await call.recv()).kind == "response_headers"
    chunks = [
        b'data: {"choices":[]}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,'
        b'"total_tokens":12}}\n\ndata: [DONE]\n\n',
    ]
    for i, chunk in enumerate(chunks):
        await call.send(response_body(chunk, eos=i == 1))
        echoed = await call.recv()
        assert echoed.streamed and echoed.body == chunk and echoed.end_of_stream == (i == 1)
    assert await call.finished()
    await settle(router)
    assert running(router) == 0
    tokens = router.metrics.registry.get_sample_value(
        "llm_d_epp_request_output_tokens_sum", {"model_name": "m", "target_model_name": "m"}
    )
    assert tokens == 3


async def test_the_first_response_chunk_releases_the_prompts_tokens():
    config = (
        "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
        "plugins: [{type: token-load-scorer}]\n"
    )
    router = local_router(config_text=config)
    await router.start()
    try:
        async with ExtProcClient(f"127.0.0.1:{router.grpc.port}") as client:
            call = client.call()
            await call.send(request_headers(HEADERS))
            await call.send(request_body(BODY, eos=True))
            await call.recv()
            await call.recv()
            total = router.store.inflight.total
            assert total().requests == 1 and total().tokens == 2  # "userhi"
            await call.send(
                response_headers({":status": "200", "content-type": "text/event-stream"})
            )
            await call.recv()
            assert total().tokens == 2  # headers come before the prompt is computed
            await call.send(response_body(b'data: {"choices":[]}\n\n', eos=False))
            await call.recv()
            assert total().requests == 1 and total().tokens == 0
            await call.send(response_body(b"data: [DONE]\n\n", eos=True))
            await call.recv()
            assert await call.finished()
            await settle(router)
            assert total().requests == 0 and total().tokens == 0
    finally:
        await router.stop(0)


async def test_buffered_exchange_decides_on_the_body(router: Router, client: ExtProcClient):
    call = client.call()
    await call.send(request_headers(HEADERS, mode="buffered", response_mode="none"))
    assert (await call.recv()).kind == "request_headers"  # answered at once, unchanged
    await call.send(request_body(BODY, eos=True))
    decision = await call.recv()
    assert decision.kind == "request_body" and decision.clear_route_cache
    assert decision.set_headers["x-gateway-destination-endpoint"] in {e.key for e in ENDPOINTS}
    assert decision.body is None  # the body was not changed, so it is not sent back
    await call.send(response_headers({":status": "200", "content-type": "text/event-stream"}))
    assert (await call.recv()).kind == "response_headers"
    assert running(router) == 1
    await call.end()  # Envoy closes the stream when the HTTP exchange ends
    await settle(router)
    assert running(router) == 0


async def test_a_request_without_body(router: Router, client: ExtProcClient):
    call = client.call()
    await call.send(request_headers({":path": "/v1/models", ":method": "GET"}, eos=True))
    decision = await call.recv()
    assert decision.kind == "request_headers"
    assert decision.set_headers["x-gateway-destination-endpoint"] in {e.key for e in ENDPOINTS}
    assert "x-request-id" in decision.set_headers  # none came, one was made


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (b"{nope", 400, b"inference error: BadRequest - error unmarshaling request body"),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
            400,
            b"inference error: BadRequest - model not found in request body",
        ),
    ],
    ids=["malformed", "no-model"],
)
async def test_bad_requests_get_immediate_responses(
    client: ExtProcClient, body: bytes, status: int, text: bytes
):
    call = client.call()
    await call.send(request_headers(HEADERS))
    await call.send(request_body(body, eos=True))
    reply = await call.recv()
    assert reply.kind == "immediate_response" and reply.status == status
    assert reply.body is not None and reply.body.startswith(text)
    assert await call.finished()


async def test_the_subset_hint_restricts_and_an_empty_one_is_503(client: ExtProcClient):
    hint = {"envoy.lb.subset_hint": {"x-gateway-destination-endpoint-subset": ["10.0.0.2:8000"]}}
    call = client.call()
    await call.send(request_headers(HEADERS, metadata=hint))
    await call.send(request_body(BODY, eos=True))
    assert (await call.recv()).set_headers["x-gateway-destination-endpoint"] == "10.0.0.2:8000"
    empty: dict[str, dict[str, list[str]]] = {
        "envoy.lb.subset_hint": {"x-gateway-destination-endpoint-subset": []}
    }
    call = client.call()
    await call.send(request_headers(HEADERS, metadata=empty))
    await call.send(request_body(BODY, eos=True))
    reply = await call.recv()
    assert reply.status == 503
    assert reply.set_headers == {"x-llm-d-request-dropped-reason": "rejected-no-endpoints"}


async def test_an_unroutable_body_mode_is_refused(client: ExtProcClient):
    call = client.call()
    await call.send(request_headers(HEADERS, mode="streamed"))
    reply = await call.recv()
    assert reply.status == 500 and b"FULL_DUPLEX_STREAMED or BUFFERED" in (reply.body or b"")


async def test_a_client_that_goes_away_releases_its_endpoint(router: Router, client: ExtProcClient):
    call = client.call()
    await call.send(request_headers(HEADERS))
    await call.send(request_body(BODY, eos=True))
    await call.recv()
    await call.recv()
    assert router.store.inflight.total().requests == 1
    call.cancel()
    await settle(router)
    assert router.store.inflight.total().requests == 0
    assert running(router) == 0


async def test_concurrent_streams_spread_over_endpoints(router: Router, client: ExtProcClient):
    async def one() -> str:
        call = client.call()
        await call.send(request_headers(HEADERS, mode="buffered", response_mode="none"))
        await call.recv()
        await call.send(request_body(BODY, eos=True))
        return (await call.recv()).set_headers["x-gateway-destination-endpoint"]

    destinations = await asyncio.gather(*(one() for _ in range(30)))
    assert Counter(destinations) == {e.key: 10 for e in ENDPOINTS}  # least in flight: even


async def test_tls_serving(tmp_path: Path):
    key, cert = self_signed_certificate("localhost")
    (tmp_path / "tls.key").write_bytes(key)
    (tmp_path / "tls.crt").write_bytes(cert)
    r = Router(local_options(endpoints=ENDPOINTS, secure_serving=True, cert_path=tmp_path))
    await r.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert)
        async with ExtProcClient(
            f"127.0.0.1:{r.grpc.port}",
            credentials,
            [("grpc.ssl_target_name_override", "localhost")],
        ) as c:
            call = c.call()
            await call.send(request_headers(HEADERS))
            await call.send(request_body(BODY, eos=True))
            assert (await call.recv()).kind == "request_headers"
    finally:
        await r.stop(0)


async def test_metrics_port_serves_llm_d_names(router: Router, client: ExtProcClient):
    call = client.call()
    await call.send(request_headers(HEADERS))
    await call.send(request_body(BODY, eos=True))
    await call.recv()
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"http://127.0.0.1:{router.metrics_server.port}/metrics")).text
    for name in (
        "llm_d_epp_request_total",
        "inference_objective_request_total",
        "llm_d_epp_scheduler_e2e_duration_seconds_bucket",
        "inference_extension_scheduler_e2e_duration_seconds_bucket",
        "llm_d_epp_ready_endpoints",
        "inference_pool_ready_pods",
    ):
        assert name in page, name


async def test_with_the_access_log_a_request_ends_when_envoy_reports_it():
    r = local_router(completion_source="access-log")
    await r.start()
    try:
        async with ExtProcClient(f"127.0.0.1:{r.grpc.port}") as client:
            call = client.call()
            await call.send(request_headers(HEADERS, mode="buffered", response_mode="none"))
            await call.recv()
            await call.send(request_body(BODY, eos=True))
            decision = (await call.recv()).set_headers
            exchange_id = decision["x-llmd-exchange-id"]
            await call.end()  # Envoy closes the stream once routed: the request goes on
            assert await call.finished()
            await asyncio.sleep(0.05)
            assert r.store.inflight.total().requests == 1
            log = client.access_log()
            await log.send(access_log([({"x-llmd-exchange-id": "unknown"}, 200)]))
            await log.send(access_log([({"x-llmd-exchange-id": exchange_id}, 0)]))
            await settle(r)
            assert r.store.inflight.total().requests == 0
            assert running(r) == 0
            # Stopping does not wait out the grace period for Envoy's long-lived log stream.
            loop = asyncio.get_running_loop()
            started = loop.time()
            await r.stop(10)
            assert loop.time() - started < 5
            assert await log.result() == grpc.StatusCode.OK
    finally:
        await r.stop(0)
