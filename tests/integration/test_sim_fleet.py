"""Many servers in one process; the fleet file; the command line."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import TYPE_CHECKING

import httpx
import yaml
import zmq
from prometheus_client.parser import text_string_to_metric_families

from llmd_sim.config import build_fleet
from llmd_sim.fleet import Fleet
from tests.kvsub import BlockStored, arecv_batch, settle
from tests.processes import start_module

if TYPE_CHECKING:
    from pathlib import Path

PROMPT = "The quick brown fox jumps over the lazy dog. " * 20


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    """``python -m llmd_sim ARGS`` with its output piped."""
    return await start_module("llmd_sim", *args)


def hits(page: str) -> float:
    for family in text_string_to_metric_families(page):
        if family.name == "vllm:prefix_cache_hits":
            return next(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("no prefix cache family")


async def test_servers_of_a_fleet_are_independent():
    fleet = Fleet(
        build_fleet(overrides={"preset": "tiny", "time-scale": 0.2}, count=3, base_port=0)
    )
    async with fleet, httpx.AsyncClient() as http:
        ports = [s.port for s in fleet.servers]
        assert len(set(ports)) == 3
        body = {"model": "sim-tiny", "prompt": PROMPT, "max_tokens": 1}
        for _ in range(2):
            assert (
                await http.post(f"{fleet.servers[0].url}/v1/completions", json=body)
            ).status_code == 200
        await http.post(f"{fleet.servers[1].url}/v1/completions", json=body)
        pages = [(await http.get(f"{s.url}/metrics")).text for s in fleet.servers]
    assert hits(pages[0]) > 0  # the repeat hit server 0's cache
    assert hits(pages[1]) == 0  # server 1 saw the prompt once: nothing to hit
    assert "vllm:num_requests_running" in pages[2] and hits(pages[2]) == 0


async def test_a_heterogeneous_fleet_file():
    document = yaml.safe_load("""
        defaults:
          preset: tiny
          time-scale: 0.2
        servers:
          - count: 2
            lora-modules: [sql-lora]
            role: decode
            labels: {zone: a}
          - preset: llama-70b-h100
            model: big-model
            time-scale: 0.01
            role: prefill
    """)
    fleet = Fleet(build_fleet(document, base_port=0))
    async with fleet, httpx.AsyncClient() as http:
        models = [
            [m["id"] for m in (await http.get(f"{s.url}/v1/models")).json()["data"]]
            for s in fleet.servers
        ]
        endpoints = fleet.endpoints_document()
    assert models == [["sim-tiny", "sql-lora"], ["sim-tiny", "sql-lora"], ["big-model"]]
    assert fleet.servers[2].config.latency.inter_token_latency == 0.032
    assert [e["labels"] for e in endpoints["endpoints"]] == [
        {"zone": "a", "llm-d.ai/role": "decode"},
        {"zone": "a", "llm-d.ai/role": "decode"},
        {"llm-d.ai/role": "prefill"},
    ]
    assert [e["port"] for e in endpoints["endpoints"]] == [str(s.port) for s in fleet.servers]
    assert all(e["address"] == "127.0.0.1" for e in endpoints["endpoints"])


async def test_the_command_line_runs_a_fleet_and_stops_cleanly(tmp_path: Path):
    endpoints_file = tmp_path / "endpoints.yaml"
    process = await start_cli(
        "--count", "3", "--port", "0", "--preset", "tiny", "--endpoints-file", str(endpoints_file)
    )
    try:
        assert process.stdout is not None
        lines = []
        async with asyncio.timeout(20):
            while not (line := (await process.stdout.readline()).decode()).startswith("3 sim"):
                assert line, "the simulator exited early"
                lines.append(line)
        urls = [line.split()[1] for line in lines if line.startswith("sim-")]
        entries = yaml.safe_load(endpoints_file.read_text())["endpoints"]
        assert [f"http://{e['address']}:{e['port']}" for e in entries] == urls
        async with httpx.AsyncClient() as http:
            for url in urls:
                response = await http.post(
                    f"{url}/v1/completions", json={"prompt": "hello", "max_tokens": 2}
                )
                assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_command_line_refuses_a_bad_fleet_file(tmp_path: Path):
    bad = tmp_path / "fleet.yaml"
    bad.write_text("servers:\n  - preset: tiny\n    max-num-seq: 4\n")
    process = await start_cli("--config", str(bad))
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"servers[0]: unknown option 'max-num-seq'" in err


def consecutive_free_ports(count: int) -> int:
    """A port p such that p .. p+count-1 are all free now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        held = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError("no run of free ports found")


async def test_binding_servers_of_a_fleet_publish_on_consecutive_ports():
    """Each binding server offsets the port by its index and names itself in the topic."""
    base = consecutive_free_ports(2)
    fleet = Fleet(
        build_fleet(
            overrides={
                "preset": "tiny",
                "time-scale": 0.2,
                "kv-events-endpoint": f"tcp://*:{base}",
            },
            count=2,
            base_port=0,
        )
    )
    context = zmq.Context()
    sockets = []
    try:
        async with fleet, httpx.AsyncClient() as http:
            for i in range(2):
                sock = context.socket(zmq.SUB)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SUBSCRIBE, b"kv@")
                sock.connect(f"tcp://127.0.0.1:{base + i}")
                sockets.append(sock)
            for sock in sockets:
                await settle(sock)
            for server in fleet.servers:
                response = await http.post(
                    f"{server.url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 1}
                )
                assert response.status_code == 200
            for server, sock in zip(fleet.servers, sockets, strict=True):
                batch = await arecv_batch(sock, 2.0)
                assert batch.topic == f"kv@127.0.0.1:{server.port}@sim-tiny"
                assert batch.seq == 0
                assert any(isinstance(e, BlockStored) for e in batch.events)
    finally:
        for sock in sockets:
            sock.close()
        context.term()
