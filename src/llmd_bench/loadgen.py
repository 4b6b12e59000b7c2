"""A closed-loop load generator for OpenAI streaming endpoints.

``workers`` clients each send requests back to back (round-robin over the target URLs) until the
deadline. A streamed response is read in raw chunks and its ``data:`` frames are counted, not
parsed: the usage chunk at the end gives the token counts. Keeping the client cheap matters on two
cores, where it shares the CPU with what it measures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["LoadResult", "RequestRecord", "run_load"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    start: float
    ttft: float | None
    end: float
    status: int
    completion_tokens: int
    error: str | None = None


@dataclass(slots=True)
class LoadResult:
    records: list[RequestRecord] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def ok(self) -> list[RequestRecord]:
        return [r for r in self.records if r.status == 200 and r.error is None]

    @property
    def duration(self) -> float:
        return self.finished - self.started

    def percentile(self, values: Sequence[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _usage_tokens(tail: bytes) -> int:
    """Completion tokens from the usage chunk near the end of an SSE body."""
    for frame in reversed(tail.split(b"\n\n")):
        if frame.startswith(b"data: {") and b'"usage"' in frame:
            usage: dict[str, Any] = json.loads(frame[6:])["usage"]
            return int(usage["completion_tokens"])
    return 0


async def _one(session: aiohttp.ClientSession, url: str, body: bytes) -> RequestRecord:
    start = time.perf_counter()
    ttft: float | None = None
    tail = b""
    try:
        async with session.post(
            url, data=body, headers={"content-type": "application/json"}
        ) as response:
            if response.status != 200:
                await response.read()
                return RequestRecord(start, None, time.perf_counter(), response.status, 0)
            async for chunk in response.content.iter_any():
                if ttft is None:
                    ttft = time.perf_counter() - start
                tail = (tail + chunk)[-2048:]
    except (aiohttp.ClientError, TimeoutError) as exc:
        return RequestRecord(start, ttft, time.perf_counter(), 0, 0, repr(exc))
    return RequestRecord(start, ttft, time.perf_counter(), 200, _usage_tokens(tail))


async def run_load(
    urls: Sequence[str],
    body: dict[str, Any],
    *,
    workers: int,
    duration: float,
    warmup: float = 0.0,
    on_window: Callable[[str], None] | None = None,
) -> LoadResult:
    """Run ``workers`` closed-loop clients through a warm-up and a measurement window.

    The result keeps the requests that completed inside the window (steady-state throughput is
    completions per second). ``on_window`` is called with ``"start"`` and ``"end"`` at the
    window's edges, to sample resource counters over exactly that interval.
    """
    payload = json.dumps(body).encode()
    targets = itertools.cycle(urls)
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        begin = time.perf_counter()
        result.started = begin + warmup
        stop_at = result.started + duration

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                record = await _one(session, next(targets), payload)
                if result.started <= record.end <= stop_at:
                    result.records.append(record)

        async def marks() -> None:
            if on_window is None:
                return
            await asyncio.sleep(max(0.0, result.started - time.perf_counter()))
            on_window("start")
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            on_window("end")

        await asyncio.gather(marks(), *(worker() for _ in range(workers)))
        result.finished = stop_at
    return result
