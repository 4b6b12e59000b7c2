"""What polling the model servers' metrics costs the router, and how fresh the signals are.

For each fleet size, one run starts:

- one ``llmd-sim`` process serving N simulated vLLM servers (default preset), each sent a few
  short completions first so that its histograms have data and its ``/metrics`` page has the
  size of a busy server's;
- the router, ``llmd-router epp`` with its defaults (every endpoint polled every 50 ms), pointed
  at the fleet through llm-d's endpoints file;
- the same router with scraping turned off (``dataLayer.injectDefaults: false`` and the default
  profile's scorers named, so only the data source differs): the router's idle cost, measured in
  the same window, so that "scraping cores" is the first minus the second.

No requests reach the routers. After a warm-up, over the window, each process's CPU time is
read from ``/proc`` (all its threads) and divided by the wall time: cores. Meanwhile both routers'
``/debug/endpoints`` are read at random instants (every 100-300 ms, the same for both, so the
cost of answering is in both figures and cancels out); every endpoint's ``metricsAgeSeconds``
in the scraping router's answer is the age of the signals a decision taken at that instant would
have seen. The collector's poll counters (``/debug/plugins``) give the polls per second each
endpoint actually got: 20 at 50 ms when the machine keeps up, fewer when it does not.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from llmd_bench.sim_capacity import process_cpu_seconds
from llmd_router.config import DEFAULT_CONFIG

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["BUDGET_CORES", "ScrapingRun", "measure", "measure_all", "table", "verdict"]

# Router CPU spent on scraping, by endpoint count (the Go reference: ~7.5 cores at 100).
BUDGET_CORES: Final = {100: 0.5}

# The default profile's scorers, with no data source: the router as it runs by default, minus
# the polling.
SCRAPING_OFF_CONFIG: Final = DEFAULT_CONFIG + "dataLayer:\n  injectDefaults: false\n"

_NAN: Final = float("nan")
_SERVING: Final = re.compile(r"endpoint picker serving ext-proc on :\d+ .*metrics :(\d+)\)")
_START_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True, slots=True)
class ScrapingRun:
    endpoints: int
    page_bytes_idle: int  # one server's /metrics before any request
    page_bytes: int  # mean over the servers after the warm-up requests: what is scraped
    window_s: float
    router_cores: float  # scraping on
    baseline_cores: float  # the same router, scraping off
    polls: int  # in the window, every endpoint together
    poll_errors: int
    age_samples: int  # endpoint ages read (samples x endpoints with a report)
    age_p50_ms: float
    age_p99_ms: float
    age_max_ms: float
    unreported: int  # endpoint samples with no good report yet (metricsAgeSeconds null)
    stale: int  # endpoint samples the router would not offer requests to ("fresh": false)
    sim_cores: float
    bench_cores: float  # this process: the /debug sampler and its HTTP client
    machine_busy: float  # share of all cores busy over the window
    first_error: str  # an endpoint's signalError seen in the window ("" if none)

    @property
    def scraping_cores(self) -> float:
        return self.router_cores - self.baseline_cores

    @property
    def polls_per_s_per_endpoint(self) -> float:
        return self.polls / self.window_s / self.endpoints

    @property
    def stale_share(self) -> float:
        """Share of the endpoint samples the router would not have offered a request to."""
        samples = self.age_samples + self.unreported
        return self.stale / samples if samples else _NAN

    @property
    def us_per_poll(self) -> float:
        """Router CPU per poll (the scraping cores spread over the polls)."""
        return self.scraping_cores * self.window_s / self.polls * 1e6 if self.polls else _NAN


def _percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else _NAN


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class _Run:
    """The processes of one fleet size, and their files."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="llmd-bench-scraping-"))
        self.processes: list[asyncio.subprocess.Process] = []
        self._files: list[Any] = []

    def _log(self, name: str) -> Any:
        handle = (self.dir / f"{name}.log").open("wb")
        self._files.append(handle)
        return handle

    async def fleet(self, count: int) -> tuple[asyncio.subprocess.Process, list[str], Path]:
        endpoints_file = self.dir / "endpoints.yaml"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmd_sim",
            "--count",
            str(count),
            "--port",
            "0",
            "--endpoints-file",
            str(endpoints_file),
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log("sim"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.processes.append(process)
        assert process.stdout is not None
        urls: list[str] = []
        async with asyncio.timeout(_START_TIMEOUT_S):
            while True:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(
                        f"the simulator exited before it was ready (see {self.dir}/sim.log)"
                    )
                if line.startswith("sim-"):
                    urls.append(line.split()[1])
                elif "ready" in line:
                    return process, urls, endpoints_file

    async def router(
        self, name: str, endpoints_file: Path, *extra: str
    ) -> tuple[asyncio.subprocess.Process, str]:
        """``llmd-router epp`` on free ports; its metrics port's base URL, once it serves."""
        log = self.dir / f"{name}.log"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmd_router",
            "--log-level",
            "INFO",  # the start-up line names the ports
            "epp",
            "--endpoints-file",
            str(endpoints_file),
            "--secure-serving=false",
            "--grpc-port",
            "0",
            "--grpc-health-port",
            "0",
            "--metrics-port",
            "0",
            *extra,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._log(name),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.processes.append(process)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = _SERVING.search(log.read_text(errors="replace"))
            if found:
                return process, f"http://127.0.0.1:{found.group(1)}"
            if process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"router {name!r} did not start (see {log})")

    async def stop(self, *, keep_logs: bool) -> None:
        """Stop every process; the logs are removed unless ``keep_logs`` (a failed run)."""
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        for handle in self._files:
            handle.close()
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)


async def _warm_servers(
    http: aiohttp.ClientSession, urls: Sequence[str], per_server: int, concurrency: int = 64
) -> None:
    """A few short completions per server, so that every histogram on its page has data."""
    body = {"prompt": "Tell me about routers.", "max_tokens": 16, "ignore_eos": True}
    limit = asyncio.Semaphore(concurrency)

    async def one(url: str) -> None:
        async with limit, http.post(f"{url}/v1/completions", json=body) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url}: warm-up request answered {response.status}")

    await asyncio.gather(*(one(u) for u in urls for _ in range(per_server)))


async def _page_sizes(http: aiohttp.ClientSession, urls: Sequence[str]) -> list[int]:
    async def size(url: str) -> int:
        async with http.get(f"{url}/metrics") as response:
            return len(await response.read())

    return list(await asyncio.gather(*(size(u) for u in urls)))


async def _json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        response.raise_for_status()
        return await response.json()


def _collector(plugins: dict[str, Any]) -> dict[str, Any]:
    for entry in plugins.values():
        if "collector" in entry:
            return dict(entry["collector"])
    return {"polls": 0, "pollErrors": 0}


async def measure(
    endpoints: int,
    *,
    window: float = 15.0,
    warmup: float = 3.0,
    requests_per_server: int = 3,
    seed: int = 0,
) -> ScrapingRun:
    """One fleet size: the routers with scraping on and off, side by side over ``window``."""
    run = _Run()
    rng = random.Random(seed)
    failed = True
    try:
        sim, urls, endpoints_file = await run.fleet(endpoints)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            idle = (await _page_sizes(http, urls[:1]))[0]
            await _warm_servers(http, urls, requests_per_server)
            sizes = await _page_sizes(http, urls)
            on, on_url = await run.router("router-on", endpoints_file)
            off, off_url = await run.router(
                "router-off", endpoints_file, "--config-text", SCRAPING_OFF_CONFIG
            )
            await asyncio.sleep(warmup)

            before = _collector(await _json(http, f"{on_url}/debug/plugins"))
            started = time.monotonic()
            cpu_before = [process_cpu_seconds(p.pid) for p in (on, off, sim)]
            own_before = time.process_time()
            busy_before, total_before = _machine_ticks()

            ages: list[float] = []
            unreported = stale = 0
            first_error = ""
            deadline = started + window
            while time.monotonic() < deadline:
                await asyncio.sleep(
                    min(rng.uniform(0.1, 0.3), max(0.0, deadline - time.monotonic()))
                )
                described = await _json(http, f"{on_url}/debug/endpoints")
                await _json(http, f"{off_url}/debug/endpoints")  # the same cost on both sides
                for entry in described:
                    age = entry["metricsAgeSeconds"]
                    if age is None:
                        unreported += 1
                    else:
                        ages.append(float(age) * 1000)
                    if not entry["fresh"]:
                        stale += 1
                    if entry["signalError"] and not first_error:
                        first_error = str(entry["signalError"])

            busy_after, total_after = _machine_ticks()
            own_after = time.process_time()
            cpu_after = [process_cpu_seconds(p.pid) for p in (on, off, sim)]
            wall = time.monotonic() - started
            after = _collector(await _json(http, f"{on_url}/debug/plugins"))
        failed = False
    finally:
        await run.stop(keep_logs=failed)
    on_cpu, off_cpu, sim_cpu = (a - b for a, b in zip(cpu_after, cpu_before, strict=True))
    ages.sort()
    return ScrapingRun(
        endpoints=endpoints,
        page_bytes_idle=idle,
        page_bytes=round(sum(sizes) / len(sizes)),
        window_s=wall,
        router_cores=on_cpu / wall,
        baseline_cores=off_cpu / wall,
        polls=int(after["polls"]) - int(before["polls"]),
        poll_errors=int(after["pollErrors"]) - int(before["pollErrors"]),
        age_samples=len(ages),
        age_p50_ms=_percentile(ages, 0.5),
        age_p99_ms=_percentile(ages, 0.99),
        age_max_ms=ages[-1] if ages else _NAN,
        unreported=unreported,
        stale=stale,
        sim_cores=sim_cpu / wall,
        bench_cores=(own_after - own_before) / wall,
        machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
        first_error=first_error,
    )


async def measure_all(
    sizes: Sequence[int],
    *,
    window: float = 15.0,
    warmup: float = 3.0,
    requests_per_server: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> list[ScrapingRun]:
    runs = []
    for count in sizes:
        run = await measure(
            count,
            window=window,
            warmup=warmup,
            requests_per_server=requests_per_server,
            seed=seed,
        )
        if progress:
            print(table([run]).splitlines()[-1], flush=True)
        runs.append(run)
    return runs


def table(runs: Sequence[ScrapingRun]) -> str:
    """Markdown, one row per fleet size."""
    rows = [
        "| endpoints | page bytes | router cores (scraping on) | router cores (off) | "
        "scraping cores | router µs/poll | polls/s/endpoint | poll errors | "
        "age p50 / p99 / max ms | stale | sim cores | machine busy |",
        "|" + "---|" * 12,
    ]
    rows.extend(
        f"| {r.endpoints:,} | {r.page_bytes:,} | {r.router_cores:.3f} | {r.baseline_cores:.3f} | "
        f"{r.scraping_cores:.3f} | {r.us_per_poll:.0f} | {r.polls_per_s_per_endpoint:.1f} | "
        f"{r.poll_errors:,} | {r.age_p50_ms:.0f} / {r.age_p99_ms:.0f} / {r.age_max_ms:.0f} | "
        f"{r.stale_share:.1%} | "
        f"{r.sim_cores:.2f} | {r.machine_busy:.0%} |"
        for r in runs
    )
    return "\n".join(rows)


def verdict(runs: Sequence[ScrapingRun]) -> str:
    """Each size with a budget against it, and any size whose polls failed."""
    lines = []
    for r in runs:
        budget = BUDGET_CORES.get(r.endpoints)
        if budget is not None:
            if r.poll_errors:
                status = "not measured (polls failed)"
            else:
                status = "met" if r.scraping_cores <= budget else "MISSED"
            lines.append(
                f"- scraping at {r.endpoints:,} endpoints: {r.scraping_cores:.3f} cores "
                f"against ≤ {budget:g}: {status}"
            )
        if r.poll_errors or r.unreported:
            lines.append(
                f"- at {r.endpoints:,} endpoints {r.poll_errors:,} of {r.polls:,} polls failed "
                f"and {r.unreported:,} endpoint samples had no report: the figures are not those "
                f"of working scraping (signalError: {r.first_error or 'none'})"
            )
    return "\n".join(lines)
