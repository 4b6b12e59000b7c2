"""Bad input gets vLLM's errors; the HTTP layer handles keep-alive, pipelining and disconnects."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.integration.conftest import StartSim, post, raw_exchange

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


async def call(
    url: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        if raw is not None:
            return await http.post(
                url + path, content=raw, headers=headers or {"content-type": "application/json"}
            )
        return await http.post(url + path, json=body, headers=headers)


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert list(err) == ["message", "type", "param", "code"]
    assert err["code"] == response.status_code
    return err


@pytest.mark.parametrize(
    ("path", "body", "status", "err_type", "param", "text"),
    [
        (CHAT, {"model": "sim-tiny"}, 400, "Bad Request", "body.messages", "Field required"),
        (CHAT, {"messages": "hi"}, 400, "Bad Request", "body.messages", "valid list"),
        (
            CHAT,
            {"messages": MSG, "max_tokens": "abc"},
            400,
            "Bad Request",
            "body.max_tokens",
            "unable to parse string as an integer",
        ),
        (
            CHAT,
            {"messages": MSG, "model": "gpt-9"},
            404,
            "NotFoundError",
            "model",
            "The model `gpt-9` does not exist. Valid aliases: sim-tiny.",
        ),
        (CHAT, {"messages": MSG, "n": 0}, 400, "BadRequestError", None, "n must be at least 1"),
        (
            CHAT,
            {"messages": MSG, "n": 2, "temperature": 0},
            400,
            "BadRequestError",
            None,
            "greedy sampling",
        ),
        (
            CHAT,
            {"messages": MSG, "max_tokens": 0},
            400,
            "BadRequestError",
            "max_tokens",
            "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
        ),
        (
            CHAT,
            {"messages": MSG, "max_completion_tokens": 99999},
            400,
            "BadRequestError",
            "max_completion_tokens",
            "cannot be greater than max_model_len=4096",
        ),
        (
            CHAT,
            {"messages": MSG, "stream_options": {"include_usage": True}},
            400,
            "BadRequestError",
            "stream_options",
            "only be defined when `stream=True`",
        ),
        (
            CHAT,
            {"messages": MSG, "stop": ["x", ""]},
            400,
            "BadRequestError",
            None,
            "stop cannot contain an empty string",
        ),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            400,
            "BadRequestError",
            None,
            "not supported",
        ),
        ("/v1/completions", {"prompt": []}, 400, "BadRequestError", "prompt", "empty"),
        (
            "/v1/completions",
            {"prompt": "word " * 5000},
            400,
            "BadRequestError",
            "input_tokens",
            "maximum context length is 4096 tokens. However, your prompt contains at least 4097",
        ),
        (
            "/v1/completions",
            {"prompt": list(range(5000))},
            400,
            "BadRequestError",
            "input_tokens",
            "your prompt contains 5000 input tokens",
        ),
    ],
    ids=[
        "missing-messages",
        "messages-not-list",
        "max-tokens-not-int",
        "unknown-model",
        "n-zero",
        "greedy-n",
        "max-tokens-zero",
        "max-tokens-over-window",
        "stream-options-without-stream",
        "empty-stop",
        "image-content",
        "empty-prompt",
        "text-too-long",
        "tokens-too-long",
    ],
)
async def test_bad_requests_get_vllm_errors(
    start_sim: StartSim,
    path: str,
    body: Any,
    status: int,
    err_type: str,
    param: str | None,
    text: str,
):
    sim = await start_sim()
    response = await call(sim.url, path, body)
    assert response.status_code == status
    err = error(response)
    assert err["type"] == err_type
    assert err["param"] == param
    assert text in err["message"]


async def test_context_length_status_can_be_413(start_sim: StartSim):
    sim = await start_sim(context_length_status=413)
    response = await call(sim.url, "/v1/completions", {"prompt": "word " * 5000})
    assert response.status_code == 413
    assert "maximum context length" in error(response)["message"]


async def test_max_tokens_beyond_the_window_is_clamped(start_sim: StartSim):
    sim = await start_sim()
    prompt = "word " * 4000
    count = (await call(sim.url, "/tokenize", {"prompt": prompt})).json()["count"]
    assert 3900 < count < 4096
    response = await call(
        sim.url, "/v1/completions", {"prompt": prompt, "max_tokens": 500, "ignore_eos": True}
    )
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 4096 - count


@pytest.mark.parametrize(
    ("raw", "headers", "text"),
    [
        (b'{"messages": [', None, "json_invalid"),
        (b"[1, 2]", None, "valid dictionary"),
        (b"\xff\xfe not utf-8", None, "json_invalid"),
        (
            b'{"messages": [{"role": "user", "content": "x"}]}',
            {"content-type": "text/plain"},
            "Only 'application/json' is allowed",
        ),
    ],
    ids=["truncated-json", "json-array", "not-utf8", "wrong-content-type"],
)
async def test_unparseable_bodies_are_400(
    start_sim: StartSim, raw: bytes, headers: dict[str, str] | None, text: str
):
    sim = await start_sim()
    response = await call(sim.url, CHAT, raw=raw, headers=headers)
    assert response.status_code == 400
    err = error(response)
    assert err["type"] == "Bad Request" and text in err["message"]


async def test_unknown_path_and_wrong_method(start_sim: StartSim):
    sim = await start_sim()
    async with httpx.AsyncClient() as http:
        missing = await http.get(f"{sim.url}/v2/nothing")
        wrong = await http.get(f"{sim.url}{CHAT}")
    assert missing.status_code == 404 and error(missing)["message"] == "Not Found"
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


async def test_oversized_body_is_413_before_it_is_read(start_sim: StartSim):
    sim = await start_sim(max_request_body_size_mb=0.01)  # about 10 KB
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 20000}]}).encode()
    # Announced length: refused from the headers alone.
    head = (
        f"POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(big)}\r\n\r\n"
    ).encode()
    reply = await raw_exchange(sim.port, head)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"exceeds the limit" in reply
    # Chunked: refused once the body crosses the limit.
    chunked = (
        f"POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        "transfer-encoding: chunked\r\n\r\n"
    ).encode()
    chunked += (
        b"".join(
            b"%x\r\n%s\r\n" % (len(part), part)
            for part in (big[:8000], big[8000:16000], big[16000:])
        )
        + b"0\r\n\r\n"
    )
    assert (await raw_exchange(sim.port, chunked)).startswith(b"HTTP/1.1 413 ")


async def test_chunked_request_body_is_accepted(start_sim: StartSim):
    """Envoy re-chunks bodies that an ext-proc server rewrote; the server must take them."""
    sim = await start_sim()
    body = json.dumps({"messages": MSG, "max_tokens": 2}).encode()
    request = (
        f"POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        "transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    ).encode()
    request += (
        b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7])
            for i in range(0, len(body), 7)
        )
        + b"0\r\n\r\n"
    )
    reply = await raw_exchange(sim.port, request)
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert b'"object":"chat.completion"' in reply


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(start_sim: StartSim):
    sim = await start_sim()
    bodies = [
        json.dumps({"prompt": f"p{i}", "max_tokens": 1, "model": "sim-tiny"}).encode()
        for i in range(3)
    ]
    pipeline = b"".join(
        post("/v1/completions", b, close=(i == 2), headers=f"x-request-id: r{i}\r\n")
        for i, b in enumerate(bodies)
    )
    reply = await raw_exchange(sim.port, pipeline)
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    positions = [reply.index(b'"id":"cmpl-r%d"' % i) for i in range(3)]
    assert positions == sorted(positions)


async def test_expect_continue_is_answered(start_sim: StartSim):
    sim = await start_sim()
    body = json.dumps({"messages": MSG, "max_tokens": 1}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(
            (
                f"POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nexpect: 100-continue\r\n\r\n"
            ).encode()
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert final.startswith(b"HTTP/1.1 200 OK")
    finally:
        writer.close()


async def test_malformed_http_gets_400_and_the_server_carries_on(start_sim: StartSim):
    sim = await start_sim()
    reply = await raw_exchange(sim.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{sim.url}/health")).status_code == 200


async def test_client_disconnect_mid_stream_frees_the_engine(start_sim: StartSim):
    sim = await start_sim(time_scale=1.0)
    body = json.dumps(
        {"prompt": "go", "max_tokens": 500, "ignore_eos": True, "stream": True, "model": "sim-tiny"}
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(post("/v1/completions", body, close=False))
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b'"text"'), 2)
    assert sim.engine.statistics().running == 1
    writer.close()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if sim.engine.statistics().running == 0:
            break
    stats = sim.engine.statistics()
    assert stats.running == 0 and stats.kv_blocks_used == 0
    assert stats.finished["abort"] == 1
    assert sim.engine.next_deadline() is None


async def test_full_queue_is_429(start_sim: StartSim):
    sim = await start_sim(max_num_seqs=1, max_waiting_queue_length=1, time_scale=1.0)
    body = {"prompt": "x", "max_tokens": 200, "ignore_eos": True, "model": "sim-tiny"}
    async with httpx.AsyncClient(timeout=10) as http:
        first = asyncio.create_task(http.post(f"{sim.url}/v1/completions", json=body))
        second = asyncio.create_task(http.post(f"{sim.url}/v1/completions", json=body))
        await asyncio.sleep(0.1)
        third = await http.post(f"{sim.url}/v1/completions", json=body)
        assert third.status_code == 429
        assert "waiting queue is full" in error(third)["message"]
        first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)


async def test_closing_the_server_cuts_kept_alive_connections(start_sim: StartSim):
    # A stopped server must look stopped to a client holding a connection open (a scraper).
    sim = await start_sim()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        await sim.close()
        async with asyncio.timeout(2):
            rest = await reader.read()  # EOF (a body may precede it)
        assert not rest.startswith(b"HTTP/1.1")
        assert reader.at_eof()
    finally:
        writer.close()
