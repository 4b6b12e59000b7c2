"""Real simulated servers on free local ports, and raw HTTP helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from llmd_sim.config import build_fleet
from llmd_sim.server import SimServer

StartSim = Callable[..., Awaitable[SimServer]]

# Fast defaults: small cache, quick tokens, so tests take milliseconds of simulated time.
FAST: dict[str, Any] = {"preset": "tiny", "time-scale": 0.2}


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """``await start_sim(**options)`` starts a server with kebab-case options (as flags)."""
    servers: list[SimServer] = []

    async def start(**options: Any) -> SimServer:
        merged = {**FAST, **{k.replace("_", "-"): v for k, v in options.items()}}
        config = build_fleet(overrides=merged, base_port=0).servers[0]
        server = SimServer(config)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def raw_exchange(port: int, data: bytes, *, wait: float = 2.0) -> bytes:
    """Send raw bytes and read until the server closes the connection (or ``wait`` seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        try:
            async with asyncio.timeout(wait):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)
    finally:
        writer.close()


def post(path: str, body: bytes, *, close: bool = True, headers: str = "") -> bytes:
    """A raw HTTP/1.1 POST with a JSON body."""
    connection = "connection: close\r\n" if close else ""
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{connection}{headers}\r\n"
    ).encode() + body
