"""What a simulated fleet costs: requests per second and CPU per streamed token.

The fleet runs as its own process (``python -m llmd_sim``) so that its CPU time can be read from
``/proc`` apart from the load generator's. Each run drives the fleet with closed-loop streaming
completions of exactly ``tokens`` output tokens (``ignore_eos``) and reports, over the
measurement window: completed requests per second, streamed tokens per second, the fleet's CPU
(cores, and microseconds per streamed token) and the load generator's own CPU. On a shared
two-core machine the per-token CPU is the figure that transfers: it bounds how large a fleet and
how much traffic a benchmark can simulate.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from llmd_bench.loadgen import run_load

__all__ = ["CapacityRun", "measure"]

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a process, summed over its threads from /proc/<pid>/task/*/schedstat
    (nanoseconds; /proc/<pid>/stat counts in 10 ms ticks, too coarse per request). Falls back
    to the tick counts where schedstat is missing."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        total = 0
    if total:
        return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass(frozen=True, slots=True)
class CapacityRun:
    servers: int
    tokens: int
    workers: int
    time_scale: float
    requests_per_s: float
    tokens_per_s: float
    sim_cores: float
    sim_us_per_token: float
    sim_ms_per_request: float
    client_cores: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    errors: int


async def _start_fleet(
    servers: int,
    preset: str,
    time_scale: float,
) -> tuple[asyncio.subprocess.Process, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmd_sim",
        "--count",
        str(servers),
        "--port",
        "0",
        "--preset",
        preset,
        "--time-scale",
        str(time_scale),
        "--max-num-seqs",
        "1024",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    urls: list[str] = []
    async with asyncio.timeout(60):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError("the simulator exited before it was ready")
            if line.startswith("sim-"):
                urls.append(line.split()[1])
            elif "ready" in line:
                return process, urls


async def measure(
    *,
    servers: int = 16,
    tokens: int = 256,
    workers: int = 256,
    duration: float = 20.0,
    warmup: float = 5.0,
    preset: str = "llama-8b-h100",
    time_scale: float = 1.0,
) -> CapacityRun:
    process, urls = await _start_fleet(servers, preset, time_scale)
    marks: dict[str, tuple[float, float]] = {}

    def mark(edge: str) -> None:
        marks[edge] = (process_cpu_seconds(process.pid), time.process_time())

    try:
        # No "model": the simulator then serves its base model, whatever the preset names it.
        body = {
            "prompt": "Tell me a story about a router.",
            "max_tokens": tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        result = await run_load(
            [f"{u}/v1/completions" for u in urls],
            body,
            workers=workers,
            duration=duration,
            warmup=warmup,
            on_window=mark,
        )
    finally:
        process.terminate()
        await process.wait()
    ok = result.ok
    streamed = sum(r.completion_tokens for r in ok)
    sim_cpu = marks["end"][0] - marks["start"][0]
    client_cpu = marks["end"][1] - marks["start"][1]
    ttfts = [r.ttft * 1000 for r in ok if r.ttft is not None]
    return CapacityRun(
        servers=servers,
        tokens=tokens,
        workers=workers,
        time_scale=time_scale,
        requests_per_s=len(ok) / result.duration,
        tokens_per_s=streamed / result.duration,
        sim_cores=sim_cpu / result.duration,
        sim_us_per_token=sim_cpu / streamed * 1e6 if streamed else float("nan"),
        sim_ms_per_request=sim_cpu / len(ok) * 1e3 if ok else float("nan"),
        client_cores=client_cpu / result.duration,
        ttft_p50_ms=result.percentile(ttfts, 0.5),
        ttft_p99_ms=result.percentile(ttfts, 0.99),
        errors=len(result.records) - len(ok),
    )


def table(runs: list[CapacityRun]) -> str:
    """A Markdown table of the runs."""
    head = (
        "| servers | tokens | workers | time scale | req/s | tokens/s | sim cores | "
        "sim µs/token | sim ms/request | client cores | TTFT p50 ms | TTFT p99 ms | errors |"
    )
    rows = [head, "|" + "---|" * 13]
    rows.extend(
        f"| {r.servers} | {r.tokens} | {r.workers} | {r.time_scale:g} | {r.requests_per_s:.1f} | "
        f"{r.tokens_per_s:,.0f} | {r.sim_cores:.2f} | {r.sim_us_per_token:.1f} | "
        f"{r.sim_ms_per_request:.2f} | {r.client_cores:.2f} | {r.ttft_p50_ms:.1f} | "
        f"{r.ttft_p99_ms:.1f} | {r.errors} |"
        for r in runs
    )
    return "\n".join(rows)


def as_dicts(runs: list[CapacityRun]) -> list[dict[str, object]]:
    return [asdict(r) for r in runs]
