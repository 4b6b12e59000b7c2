"""What Envoy and the router add to a request: time to first token and CPU, side by side.

One run starts a simulated vLLM server, the router (``llmd-router epp``) and three Envoys, each in
its own process so that each one's CPU can be read from ``/proc``:

- ``direct``: the client calls the simulator;
- ``envoy``: Envoy alone in front of it (a static route, no ext_proc);
- ``floor-buffered``: the same bootstrap in front of a do-nothing ext-proc server
  (``llmd_bench.null_extproc``: same gRPC stack, no parsing or scheduling), the floor that any
  Python ext-proc server on grpc.aio pays;
- ``router-buffered``: Envoy with the router in our Standalone bootstrap (BUFFERED request
  body, response body not processed);
- ``router-full-duplex``: Envoy with the router in llm-d's settings (FULL_DUPLEX_STREAMED both
  ways: every streamed chunk passes through the router).

For each prompt size and client count, every setup serves the same streamed completions
(``ignore_eos``, a fixed number of output tokens) in turn. Time to first token is measured at
the client as the time to the first body byte (the simulator sends headers at once and the
first bytes with the first token). "Added" figures subtract the direct figures of the same run.
The simulator's latencies are fixed (no jitter) so that only the path differs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from llmd_bench.sim_capacity import process_cpu_seconds
from llmd_router.proxy.bootstrap import Mode, ProxyConfig, build_bootstrap
from llmd_router.proxy.supervisor import find_envoy

__all__ = ["Phase", "against_floor", "measure_all", "table"]

SETUPS = ("direct", "envoy", "floor-buffered", "router-buffered", "router-full-duplex")
_EXTPROC_OF = {
    "floor-buffered": "floor",
    "router-buffered": "router",
    "router-full-duplex": "router",
}
_SIM_FLAGS = [
    "--preset",
    "tiny",
    "--max-model-len",
    "32768",
    "--kv-cache-size",
    "200000",
    "--max-num-seqs",
    "256",
    "--prefill-overhead",
    "2ms",
    "--prefill-time-per-token",
    "0ms",
    "--inter-token-latency",
    "1ms",
    "--time-factor-under-load",
    "1",
    "--enable-prefix-caching",
    "false",
]


@dataclass(frozen=True, slots=True)
class Phase:
    setup: str
    prompt_tokens: int
    clients: int
    requests: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    router_cpu_ms: float | None  # per request, of the ext-proc server (router or floor)
    envoy_cpu_ms: float | None
    errors: int
    machine_busy: float  # share of all cores busy during the phase: near 1, figures show contention


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_http(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _envoy_only(listen: int, admin: int, upstream: int) -> dict[str, Any]:
    """Envoy with one static route to the simulator: the cost of the proxy alone."""

    def address(port: int) -> dict[str, Any]:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    route = {"match": {"prefix": "/"}, "route": {"cluster": "sim", "timeout": "0s"}}
    hcm = {
        "@type": _HCM,
        "stat_prefix": "l",
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    listener = {
        "name": "l",
        "address": address(listen),
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
    cluster = {
        "name": "sim",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "sim",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(upstream)}}]}],
        },
    }
    return {
        "admin": {"address": address(admin)},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


class _Processes:
    def __init__(self) -> None:
        self.items: dict[str, asyncio.subprocess.Process] = {}
        self.dir = Path(tempfile.mkdtemp(prefix="llmd-bench-"))

    async def spawn(self, name: str, *command: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.items[name] = process
        return process

    async def envoy(self, name: str, bootstrap: dict[str, Any]) -> asyncio.subprocess.Process:
        path = self.dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(bootstrap))
        return await self.spawn(
            name,
            find_envoy(),
            "-c",
            str(path),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "error",
        )

    def cpu(self, name: str) -> float:
        return process_cpu_seconds(self.items[name].pid)

    async def stop(self) -> None:
        for process in self.items.values():
            if process.returncode is None:
                process.terminate()
        for process in self.items.values():
            await process.wait()


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
) -> tuple[float, float] | None:
    start = time.perf_counter()
    first: float | None = None
    async with session.post(
        url, data=body, headers={"content-type": "application/json"}
    ) as response:
        if response.status != 200:
            await response.read()
            return None
        async for _ in response.content.iter_any():
            if first is None:
                first = time.perf_counter() - start
    end = time.perf_counter() - start
    return (first if first is not None else end), end


async def _run_phase(
    url: str,
    body: bytes,
    clients: int,
    requests: int,
) -> tuple[list[tuple[float, float]], int]:
    results: list[tuple[float, float]] = []
    errors = 0
    per_client = max(1, requests // clients)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal errors
            for _ in range(per_client):
                outcome = await _one(session, url, body)
                if outcome is None:
                    errors += 1
                else:
                    results.append(outcome)

        await asyncio.gather(*(client() for _ in range(clients)))
    return results, errors


async def measure_all(
    *,
    prompt_sizes: tuple[int, ...] = (1000, 10000),
    clients: tuple[int, ...] = (1, 16),
    output_tokens: int = 256,
    requests: int = 64,
    warmup: int = 8,
) -> list[Phase]:
    procs = _Processes()
    sim_port, grpc_port, health_port, metrics_port, floor_port = (_free_port() for _ in range(5))
    ports = {name: (_free_port(), _free_port()) for name in SETUPS[1:]}
    try:
        await procs.spawn(
            "sim", sys.executable, "-m", "llmd_sim", "--port", str(sim_port), *_SIM_FLAGS
        )
        await procs.spawn(
            "router",
            sys.executable,
            "-m",
            "llmd_router",
            "--log-level",
            "WARNING",
            "epp",
            "--endpoints",
            f"127.0.0.1:{sim_port}",
            "--grpc-port",
            str(grpc_port),
            "--grpc-health-port",
            str(health_port),
            "--metrics-port",
            str(metrics_port),
            "--secure-serving=false",
            "--max-request-body-bytes",
            str(64 << 20),
            "--completion-source",  # what standalone sets for its buffered bootstrap
            "access-log",
        )
        await procs.spawn(
            "floor",
            sys.executable,
            "-m",
            "llmd_bench.null_extproc",
            "--port",
            str(floor_port),
            "--endpoint",
            f"127.0.0.1:{sim_port}",
        )
        await _wait_http(f"http://127.0.0.1:{sim_port}/health")
        await _wait_http(f"http://127.0.0.1:{metrics_port}/metrics")
        listen, admin = ports["envoy"]
        await procs.envoy("envoy", _envoy_only(listen, admin, sim_port))
        chains: tuple[tuple[str, Mode, int], ...] = (
            ("floor-buffered", "buffered", floor_port),
            ("router-buffered", "buffered", grpc_port),
            ("router-full-duplex", "full-duplex", grpc_port),
        )
        for name, mode, epp_port in chains:
            listen, admin = ports[name]
            config = ProxyConfig(
                listen_host="127.0.0.1",
                listen_port=listen,
                admin_port=admin,
                epp_port=epp_port,
                mode=mode,
            )
            await procs.envoy(name, build_bootstrap(config))
        for _, admin in ports.values():
            await _wait_http(f"http://127.0.0.1:{admin}/ready")
        urls = {
            "direct": f"http://127.0.0.1:{sim_port}/v1/completions",
            **{
                name: f"http://127.0.0.1:{listen}/v1/completions"
                for name, (listen, _) in ports.items()
            },
        }
        phases: list[Phase] = []
        for tokens in prompt_sizes:
            body = json.dumps(
                {
                    "model": "sim-tiny",
                    "prompt": "word " * (tokens - 1),
                    "max_tokens": output_tokens,
                    "ignore_eos": True,
                    "stream": True,
                }
            ).encode()
            for count in clients:
                for setup in SETUPS:
                    await _run_phase(urls[setup], body, count, warmup)
                    extproc = _EXTPROC_OF.get(setup)
                    router_before = procs.cpu(extproc) if extproc else 0.0
                    envoy_before = procs.cpu(setup) if setup != "direct" else 0.0
                    busy_before, total_before = _machine_ticks()
                    results, errors = await _run_phase(urls[setup], body, count, requests)
                    busy_after, total_after = _machine_ticks()
                    router_cpu = (procs.cpu(extproc) - router_before) if extproc else None
                    envoy_cpu = (procs.cpu(setup) - envoy_before) if setup != "direct" else None
                    n = max(1, len(results))
                    phases.append(
                        Phase(
                            setup=setup,
                            prompt_tokens=tokens,
                            clients=count,
                            requests=len(results),
                            ttft_p50_ms=_percentile([r[0] for r in results], 0.5) * 1000,
                            ttft_p99_ms=_percentile([r[0] for r in results], 0.99) * 1000,
                            total_p50_ms=_percentile([r[1] for r in results], 0.5) * 1000,
                            router_cpu_ms=router_cpu / n * 1000 if router_cpu is not None else None,
                            envoy_cpu_ms=envoy_cpu / n * 1000 if envoy_cpu is not None else None,
                            errors=errors,
                            machine_busy=(busy_after - busy_before)
                            / max(1, total_after - total_before),
                        )
                    )
        return phases
    finally:
        await procs.stop()


def table(phases: list[Phase]) -> str:
    """Markdown: per prompt size and client count, each setup against direct."""
    direct = {(p.prompt_tokens, p.clients): p for p in phases if p.setup == "direct"}
    rows = [
        "| prompt tokens | clients | setup | TTFT p50 ms | added p50 | TTFT p99 ms | "
        "added p99 | ext-proc CPU ms/req | Envoy CPU ms/req | machine busy | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        base = direct[(p.prompt_tokens, p.clients)]
        added50 = "" if p.setup == "direct" else f"{p.ttft_p50_ms - base.ttft_p50_ms:+.2f}"
        added99 = "" if p.setup == "direct" else f"{p.ttft_p99_ms - base.ttft_p99_ms:+.2f}"
        router = "" if p.router_cpu_ms is None else f"{p.router_cpu_ms:.3f}"
        envoy = "" if p.envoy_cpu_ms is None else f"{p.envoy_cpu_ms:.3f}"
        rows.append(
            f"| {p.prompt_tokens} | {p.clients} | {p.setup} | {p.ttft_p50_ms:.2f} | "
            f"{added50} | {p.ttft_p99_ms:.2f} | {added99} | {router} | {envoy} | "
            f"{p.machine_busy:.0%} | {p.errors} |"
        )
    return "\n".join(rows)


def against_floor(phases: list[Phase]) -> str:
    """Markdown: the router's own cost, as its buffered CPU over the do-nothing server's."""
    by_key = {(p.prompt_tokens, p.clients, p.setup): p for p in phases}
    rows = [
        "| prompt tokens | clients | router CPU ms/req | floor CPU ms/req | router / floor |",
        "|---|---|---|---|---|",
    ]
    for (tokens, clients, setup), router in by_key.items():
        floor = by_key.get((tokens, clients, "floor-buffered"))
        if setup != "router-buffered" or floor is None:
            continue
        if router.router_cpu_ms is None or not floor.router_cpu_ms:
            continue
        rows.append(
            f"| {tokens} | {clients} | {router.router_cpu_ms:.3f} | {floor.router_cpu_ms:.3f} | "
            f"{router.router_cpu_ms / floor.router_cpu_ms:.2f} |"
        )
    return "\n".join(rows)
