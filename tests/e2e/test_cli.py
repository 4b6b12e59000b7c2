"""The command line, as a user runs it: ``llmd-router demo`` and ``llmd-router standalone``."""

from __future__ import annotations

import asyncio
import re
import signal
from typing import TYPE_CHECKING

import httpx
import openai
import pytest

from llmd_router.cli.demo import MODEL
from llmd_sim.config import build_fleet
from llmd_sim.fleet import Fleet
from tests.processes import start_module

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


LEAST_LOADED = (
    "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
    "plugins: [{type: active-request-scorer}]\n"
)


async def start_router(*args: str) -> asyncio.subprocess.Process:
    return await start_module("llmd_router", *args)


async def read_until(
    process: asyncio.subprocess.Process, pattern: str
) -> tuple[str, re.Match[str]]:
    """Stdout up to the first line matching ``pattern``."""
    assert process.stdout is not None
    seen = ""
    async with asyncio.timeout(60):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                stderr = (await process.stderr.read()).decode() if process.stderr else ""
                raise AssertionError(f"exited before {pattern!r}:\n{seen}\n{stderr}")
            seen += line
            if match := re.search(pattern, line):
                return seen, match


async def interrupt(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        return await process.wait()


@pytest.fixture
async def demo() -> AsyncIterator[tuple[asyncio.subprocess.Process, str, str]]:
    process = await start_router("demo", "--port", "0", "--servers", "2")
    try:
        printed, _ = await read_until(process, r"Ctrl-C stops everything")
        url = re.search(r"listening on (http://\S+);", printed)
        assert url is not None, printed
        yield process, url.group(1), printed
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_demo_answers_openai_requests_and_stops_cleanly(demo):
    process, url, printed = demo
    assert "2 simulated vLLM servers" in printed
    metrics_url = re.search(r"router metrics: (\S+)", printed)
    assert metrics_url is not None
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused") as client:
        chat = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
        )
        assert chat.choices[0].message.content
        assert chat.usage is not None and chat.usage.completion_tokens == 8
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hello again!"}],
            max_tokens=4,
            stream=True,
        )
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        assert "".join(p for p in pieces if p)
    async with httpx.AsyncClient() as http:
        page = (await http.get(metrics_url.group(1))).text
    counted = re.search(
        rf'llm_d_epp_request_total{{[^}}]*model_name="{re.escape(MODEL)}"[^}}]*}} (\S+)', page
    )
    assert counted is not None and float(counted.group(1)) == 2.0, page
    assert await interrupt(process) == 0


async def test_demo_prints_a_curl_line_that_works(demo):
    process, url, printed = demo
    curl = next(line.strip() for line in printed.splitlines() if line.strip().startswith("curl"))
    assert url in curl
    run = await asyncio.create_subprocess_shell(
        curl, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await run.communicate()
    assert run.returncode == 0
    assert b"data: [DONE]" in out
    assert await interrupt(process) == 0


async def test_standalone_routes_to_the_endpoints_it_is_given():
    fleet = Fleet(
        build_fleet(overrides={"preset": "tiny", "time-scale": 0.2}, count=2, base_port=0)
    )
    async with fleet:
        await standalone_serves(fleet)


async def standalone_serves(fleet: Fleet) -> None:
    sims = fleet.servers
    endpoints = ",".join(f"127.0.0.1:{s.port}" for s in sims)
    process = await start_router(
        *("standalone", "--endpoints", endpoints, "--port", "0", "--admin-port", "0"),
        *("--grpc-port", "0", "--grpc-health-port", "0", "--metrics-port", "0"),
        *("--host", "127.0.0.1"),
        *("--config-text", LEAST_LOADED),
    )
    try:
        _, match = await read_until(process, r"listening on (http://\S+) \(2 endpoints\)")
        async with httpx.AsyncClient(base_url=match.group(1)) as http:
            for _ in range(4):
                answer = await http.post(
                    "/v1/completions",
                    json={"model": "sim-tiny", "prompt": "hi", "max_tokens": 2},
                )
                assert answer.status_code == 200, answer.text
        served = [sum(s.engine.statistics().finished.values()) for s in sims]
        assert sum(served) == 4 and all(served)  # least in-flight spreads sequential requests
        assert await interrupt(process) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("standalone", "--port", "0"), "name the model servers with --endpoints"),
        (("epp", "--endpoints", "nohost"), "nohost"),
    ],
)
async def test_bad_endpoints_exit_with_a_message(args, message):
    process = await start_router(*args)
    _, stderr = await process.communicate()
    assert process.returncode == 2
    assert message in stderr.decode()


async def test_check_config_prints_the_configuration_as_it_runs(tmp_path):
    path = tmp_path / "epp.yaml"
    path.write_text(LEAST_LOADED)
    process = await start_router("check-config", str(path))
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    text = stdout.decode()
    assert f"# {path}: valid" in text
    assert "added 'inflight-load-producer' (system default)" in text
    assert "profileHandler: single-profile-handler" in text
    assert "pluginRef: active-request-scorer" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("check-config", "CONFIG"),
            "plugin 'queue-scorer' (type 'queue-scorer'): parameters: "
            "Object contains unknown field `treshold`",
        ),
        (
            ("epp", "--endpoints", "127.0.0.1:1", "--config-file", "CONFIG"),
            "invalid configuration",
        ),
        (("check-config", "MISSING"), "cannot read"),
    ],
)
async def test_an_invalid_configuration_exits_non_zero_naming_the_fault(tmp_path, args, message):
    path = tmp_path / "epp.yaml"
    path.write_text(
        "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
        "plugins: [{type: queue-scorer, parameters: {treshold: 1}}]\n"
    )
    real = [
        str(path) if a == "CONFIG" else str(tmp_path / "nope.yaml") if a == "MISSING" else a
        for a in args
    ]
    process = await start_router(*real)
    _, stderr = await process.communicate()
    assert process.returncode == 2
    assert message in stderr.decode()
