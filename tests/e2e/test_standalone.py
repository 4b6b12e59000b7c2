"""Real Envoy + the router + simulated vLLM servers, through the OpenAI SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Literal

import httpx
import openai
import pytest

from llmd_router.proxy.supervisor import EnvoyError
from tests.e2e.conftest import MODEL, StartStack

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

Mode = Literal["buffered", "full-duplex"]
MODES: list[Mode] = ["buffered", "full-duplex"]
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
LEAST_LOADED = (
    "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
    "plugins: [{type: active-request-scorer}]\n"
)


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


@pytest.mark.parametrize("mode", MODES)
async def test_openai_sdk_through_envoy(start_stack: StartStack, mode: Mode):
    stack = await start_stack(mode=mode)
    async with sdk(stack.url) as api:
        chat = await api.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=5,
            extra_body={"ignore_eos": True},
        )
        assert chat.usage is not None and chat.usage.completion_tokens == 5
        stream = await api.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(text.split()) == 7
        completion = await api.completions.create(
            model=MODEL, prompt="count to three", max_tokens=3, extra_body={"ignore_eos": True}
        )
        assert completion.choices[0].finish_reason == "length"
        streamed = await api.completions.create(
            model=MODEL, prompt="go", max_tokens=4, stream=True, extra_body={"ignore_eos": True}
        )
        assert len([c async for c in streamed]) == 4
        models = await api.models.list()
        assert [m.id for m in models.data] == [MODEL]
    await asyncio.sleep(0.05)
    assert stack.app.router.store.inflight.total().requests == 0


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_requests_spread_over_the_servers(start_stack: StartStack, mode: Mode):
    stack = await start_stack(
        mode=mode, sim={"time-scale": 1.0}, router={"config_text": LEAST_LOADED}
    )
    async with sdk(stack.url) as api:

        async def one(i: int) -> None:
            stream = await api.completions.create(
                model=MODEL,
                prompt=f"request {i}",
                max_tokens=20,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            assert len([c async for c in stream]) == 20

        await asyncio.gather(*(one(i) for i in range(30)))
    served = stack.served()
    assert sum(served) == 30
    assert min(served) >= 5, served  # least in flight keeps them close
    await asyncio.sleep(0.05)
    assert stack.app.router.store.inflight.total().requests == 0


async def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{url}/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json", **(headers or {})},
        )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (
            b'{"model": "sim-tiny", "messages": [',
            400,
            "inference error: BadRequest - error unmarshaling request body",
        ),
        (
            json.dumps({"messages": MESSAGES}).encode(),
            400,
            "inference error: BadRequest - model not found in request body",
        ),
        (b"\xff\xfe\xfd", 400, "inference error: BadRequest - error unmarshaling"),
        (
            json.dumps(
                {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}
            ).encode(),
            413,
            "inference error: PayloadTooLarge - request body exceeds the limit",
        ),
    ],
    ids=["malformed-json", "missing-model", "not-utf8", "over-the-router-limit"],
)
async def test_bad_requests_get_clear_errors(
    start_stack: StartStack, mode: str, body: bytes, status: int, text: str
):
    stack = await start_stack(mode=mode, router={"max_body_bytes": 4096})
    response = await post(stack.url, body)
    assert response.status_code == status
    assert response.text.startswith(text)
    assert sum(stack.served()) == 0


async def test_a_body_over_envoys_buffer_is_413(start_stack: StartStack):
    stack = await start_stack(mode="buffered", proxy={"max_request_bytes": 2048})
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 8000}]})
    response = await post(stack.url, body.encode())
    assert response.status_code == 413


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("failure_mode", ["closed", "open"])
async def test_a_client_cannot_choose_its_upstream(
    start_stack: StartStack, mode: str, failure_mode: str
):
    stack = await start_stack(mode=mode, failure_mode=failure_mode)
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 2}).encode()
    # Nothing listens on port 1: had the header been obeyed, the request would fail.
    for header in (
        "x-gateway-destination-endpoint",
        "X-Gateway-Destination-Endpoint",
        "x-gateway-destination-endpoint-served",
    ):
        response = await post(stack.url, body, {header: "127.0.0.1:1"})
        assert response.status_code == 200, (header, response.text)
    assert sum(stack.served()) == 3


async def test_the_request_id_reaches_the_model_server(start_stack: StartStack):
    stack = await start_stack()
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 1}).encode()
    response = await post(stack.url, body, {"x-request-id": "trace-me-42"})
    assert response.json()["id"] == "chatcmpl-trace-me-42"


async def restart_router(stack) -> None:
    await stack.app.router.grpc.start()
    await stack.app.router.grpc.set_ready(ready=True)


@pytest.mark.parametrize("mode", MODES)
async def test_fail_closed_answers_503_and_recovers(start_stack: StartStack, mode: Mode):
    stack = await start_stack(mode=mode, failure_mode="closed")
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 2}).encode()
    assert (await post(stack.url, body)).status_code == 200
    await stack.app.router.grpc.stop(0)
    down = await post(stack.url, body)
    assert down.status_code == 503
    await restart_router(stack)
    for _ in range(50):  # Envoy reconnects to the router on its own
        if (await post(stack.url, body)).status_code == 200:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the router never came back into use")


async def test_fail_open_serves_from_the_pool_while_the_router_is_down(start_stack: StartStack):
    stack = await start_stack(mode="buffered", failure_mode="open")
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 2}).encode()
    await stack.app.router.grpc.stop(0)
    statuses = [(await post(stack.url, body)).status_code for _ in range(6)]
    assert statuses == [200] * 6
    assert (
        stack.app.router.metrics.registry.get_sample_value(
            "llm_d_epp_request_total",
            {
                "model_name": MODEL,
                "target_model_name": MODEL,
                "fairness_id": "default-flow",
                "priority": "0",
            },
        )
        is None
    )
    await restart_router(stack)
    for _ in range(50):
        await post(stack.url, body)
        routed = stack.app.router.metrics.registry.get_sample_value(
            "llm_d_epp_request_total",
            {
                "model_name": MODEL,
                "target_model_name": MODEL,
                "fairness_id": "default-flow",
                "priority": "0",
            },
        )
        if routed:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the router never came back into use")


def inflight(stack) -> int:
    return stack.app.router.store.inflight.total().requests


async def eventually(predicate, within: float = 5.0) -> bool:
    for _ in range(int(within / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("mode", MODES)
async def test_a_request_stays_in_flight_until_its_response_ends(start_stack: StartStack, mode):
    """In buffered mode Envoy closes the ext-proc stream right after routing; the request must
    still count as in flight until Envoy's access log reports its end."""
    stack = await start_stack(mode=mode, sim={"time-scale": 1.0})
    async with sdk(stack.url) as api:
        stream = await api.completions.create(
            model=MODEL, prompt="go", max_tokens=40, stream=True, extra_body={"ignore_eos": True}
        )
        chunks = [await anext(stream)]
        await asyncio.sleep(0.1)  # well past the stream's close and a log flush
        assert inflight(stack) == 1
        chunks += [c async for c in stream]
    assert len(chunks) == 40
    assert await eventually(lambda: inflight(stack) == 0)


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_gone_mid_response_releases_its_endpoint(start_stack: StartStack, mode):
    stack = await start_stack(mode=mode, sim={"time-scale": 1.0})
    body = {"model": MODEL, "prompt": "go", "max_tokens": 500, "stream": True, "ignore_eos": True}
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("POST", f"{stack.url}/v1/completions", json=body) as response,
    ):
        async for _ in response.aiter_bytes():
            break
        assert inflight(stack) == 1
    assert await eventually(lambda: inflight(stack) == 0)


@pytest.mark.parametrize("mode", MODES)
async def test_model_server_errors_are_counted(start_stack: StartStack, mode):
    stack = await start_stack(mode=mode, sim={"fault-error-rate": 1.0, "fault-error-status": 503})
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 2}).encode()
    assert (await post(stack.url, body)).status_code == 503
    labels = {
        "model_name": MODEL,
        "target_model_name": MODEL,
        "error_code": "ModelServerError",
        "fairness_id": "default-flow",
        "priority": "0",
    }
    registry = stack.app.router.metrics.registry
    assert await eventually(
        lambda: registry.get_sample_value("llm_d_epp_request_error_total", labels) == 1
    )
    assert inflight(stack) == 0


async def test_envoy_supervision_is_a_loop_of_the_router_and_its_death_stops_standalone(
    start_stack: StartStack,
):
    stack = await start_stack()
    tasks = stack.app.router.tasks
    assert tasks is not None
    envoy = tasks.loops["envoy"]
    assert envoy.task is not None
    assert envoy.statistics()["state"] == "running"
    envoy.task.cancel()  # killed from outside: Envoy is no longer watched, which must not pass
    stop = asyncio.Event()
    with pytest.raises(EnvoyError, match="Envoy is no longer supervised"):
        await asyncio.wait_for(stack.app.run(stop), 5)
    assert envoy.state == "given up"
