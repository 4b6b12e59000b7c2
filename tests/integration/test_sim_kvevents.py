"""The simulator's KV events over real ZMQ, read by the independent decoder in tests/kvsub.py.

Each test starts one in-process simulator with a KV-event endpoint on 127.0.0.1, talks HTTP to it
with plain asyncio streams, and checks the events against vLLM's behaviour as the wire reference
describes it: consecutive sequence numbers from 0, topic ``kv@host:port@model``, whole-block
``BlockStored`` runs chained by ``parent_block_hash``, prefix hits that store nothing new, LRU
evictions reported as ``BlockRemoved``, and ``AllBlocksCleared`` on a prefix-cache reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from llmd_sim.config import build_fleet
from llmd_sim.server import SimServer
from tests.kvsub import (
    AllBlocksCleared,
    Batch,
    BlockRemoved,
    BlockStored,
    decode_message,
    settle,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

MODEL = "sim-tiny"
BS = 16
PROMPT = "The quick brown fox jumps over the lazy dog. " * 40


# --------------------------------------------------------------------------- plumbing


async def http(
    port: int, method: str, path: str, body: object = None, within: float = 5.0
) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange on a fresh connection (``connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
            "connection: close\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" not in headers.lower()
    return int(status_line.split()[1]), payload


async def complete(port: int, prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}
    status, payload = await http(port, "POST", "/v1/completions", body)
    assert status == 200, payload
    answer: dict[str, Any] = json.loads(payload)
    assert answer["usage"]["completion_tokens"] == max_tokens
    return answer


async def tokenize(port: int, prompt: str) -> list[int]:
    status, payload = await http(port, "POST", "/tokenize", {"model": MODEL, "prompt": prompt})
    assert status == 200, payload
    tokens: list[int] = json.loads(payload)["tokens"]
    return tokens


async def metric(port: int, name: str) -> float:
    status, payload = await http(port, "GET", "/metrics")
    assert status == 200
    total, seen = 0.0, False
    for family in text_string_to_metric_families(payload.decode()):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
                seen = True
    assert seen, f"{name} not on /metrics"
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Sub:
    """A SUB socket plus everything received on it, raw and decoded."""

    sock: zmq.Socket[Any]
    raw: list[list[bytes]] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)

    async def drain(self, quiet: float = 0.15, within: float = 2.0) -> list[Batch]:
        """Receive until ``quiet`` seconds pass without a message; return the new batches."""
        new: list[Batch] = []
        deadline = time.monotonic() + within
        last = time.monotonic()
        while time.monotonic() - last < quiet and time.monotonic() < deadline:
            if self.sock.poll(0, zmq.POLLIN):
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
                batch = decode_message(frames)
                self.raw.append(frames)
                self.batches.append(batch)
                new.append(batch)
                last = time.monotonic()
            else:
                await asyncio.sleep(0.002)
        return new


@dataclass
class Sim:
    server: SimServer
    sub: Sub

    @property
    def port(self) -> int:
        return self.server.port


@contextlib.asynccontextmanager
async def running(
    encoding: str = "map", bind: bool = False, options: dict[str, object] | None = None
) -> AsyncIterator[Sim]:
    """A simulator publishing KV events to a fresh SUB socket.

    ``bind=True``: the endpoint has ``*``, so the simulator binds and the SUB connects.
    ``bind=False``: the endpoint names 127.0.0.1, so the simulator connects and the SUB binds.
    """
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    server: SimServer | None = None
    try:
        sock.setsockopt(zmq.SUBSCRIBE, b"kv@")
        if bind:
            zport = free_port()
            endpoint = f"tcp://*:{zport}"
        else:
            zport = sock.bind_to_random_port("tcp://127.0.0.1")
            endpoint = f"tcp://127.0.0.1:{zport}"
        overrides: dict[str, object] = {
            "preset": "tiny",
            "kv-events-endpoint": endpoint,
            "kv-events-format": encoding,
            "block-size": BS,
            "time-scale": 0.1,
        }
        overrides.update(options or {})
        cfg = build_fleet(overrides=overrides, base_port=0).servers[0]
        server = SimServer(cfg)
        await server.start()
        if bind:
            sock.connect(f"tcp://127.0.0.1:{zport}")
        await settle(sock, 0.3)  # slow joiner
        yield Sim(server, Sub(sock))
    finally:
        if server is not None:
            await server.close()
        sock.close(linger=0)
        ctx.term()


def stored(batches: list[Batch]) -> list[BlockStored]:
    return [e for b in batches for e in b.events if isinstance(e, BlockStored)]


def removed(batches: list[Batch]) -> list[BlockRemoved]:
    return [e for b in batches for e in b.events if isinstance(e, BlockRemoved)]


def chain(events: list[BlockStored]) -> list[int]:
    return [h for e in events for h in e.block_hashes]


def check_block_stored(ev: BlockStored) -> None:
    assert ev.block_size == BS
    assert ev.block_hashes
    assert len(ev.token_ids) == len(ev.block_hashes) * BS  # whole blocks only
    assert ev.medium == "GPU"
    assert ev.lora_name is None


def check_chained(events: list[BlockStored]) -> None:
    """One request's runs: the first starts at block 0, each next one continues the last."""
    assert events
    assert events[0].parent_block_hash is None
    for before, after in itertools.pairwise(events):
        assert after.parent_block_hash == before.block_hashes[-1]


def check_raw_encoding(raw: list[list[bytes]], encoding: str) -> None:
    """The option is honoured on the wire: positional batch; events as maps or arrays."""
    for frames in raw:
        batch = msgpack.unpackb(frames[2], raw=False, strict_map_key=False)
        assert isinstance(batch, list)
        assert len(batch) == 3
        for event in batch[1]:
            if encoding == "map":
                assert isinstance(event, dict)
                assert isinstance(event["type"], str)
            else:
                assert isinstance(event, list)
                assert isinstance(event[0], str)
                if event[0] == "BlockStored":
                    # vLLM <= 0.23: lora_id, medium and lora_name have no default, always sent.
                    assert len(event) >= 8


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("bind", [True, False], ids=["sim-binds", "sim-connects"])
@pytest.mark.parametrize("encoding", ["map", "array"])
async def test_prompt_blocks_then_prefix_hit(encoding: str, bind: bool):
    async with running(encoding=encoding, bind=bind) as sim:
        topic = f"kv@127.0.0.1:{sim.port}@{MODEL}"
        assert sim.server.kv_topic == topic
        tokens = await tokenize(sim.port, PROMPT)
        n_prompt = len(tokens)
        assert 300 < n_prompt < 1000

        answer = await complete(sim.port, PROMPT, max_tokens=8)
        assert answer["usage"]["prompt_tokens"] == n_prompt
        first = await sim.sub.drain()
        assert first, "no KV events after the first completion"
        assert [b.seq for b in first] == list(range(len(first)))
        now = time.time()
        for b in first:
            assert b.topic == topic
            assert b.dp_rank == 0
            assert abs(b.ts - now) < 10
        check_raw_encoding(sim.sub.raw, encoding)
        runs = stored(first)
        assert len(runs) == sum(len(b.events) for b in first)  # nothing but stores yet
        for ev in runs:
            check_block_stored(ev)
        check_chained(runs)
        hashes = chain(runs)
        assert len(hashes) == len(set(hashes))
        # 8 output tokens: the KV of prompt + 7 tokens is computed; its full blocks are stored.
        assert len(hashes) == (n_prompt + 8 - 1) // BS
        n_full_prompt = n_prompt // BS
        flat = [t for ev in runs for t in ev.token_ids]
        assert flat[: n_full_prompt * BS] == tokens[: n_full_prompt * BS]

        hits_before = await metric(sim.port, "vllm:prefix_cache_hits_total")
        queries_before = await metric(sim.port, "vllm:prefix_cache_queries_total")
        await complete(sim.port, PROMPT, max_tokens=8)
        second = await sim.sub.drain()
        hits_after = await metric(sim.port, "vllm:prefix_cache_hits_total")
        queries_after = await metric(sim.port, "vllm:prefix_cache_queries_total")

        # Every prompt block is cached: nothing is stored again.
        again = stored(second)
        assert not set(chain(again)) & set(hashes[:n_full_prompt])
        assert all(ev.parent_block_hash is not None for ev in again)
        assert again == []  # prompt + 7 computed tokens stay within the cached full blocks
        assert removed(second) == []
        seqs = [b.seq for b in sim.sub.batches]
        assert seqs == list(range(len(seqs)))
        # vLLM counts hits in tokens, whole blocks, never the last prompt token.
        assert hits_after - hits_before == (n_prompt - 1) // BS * BS
        assert queries_after - queries_before == n_prompt


async def test_decode_filled_blocks_are_stored():
    async with running() as sim:
        tokens = await tokenize(sim.port, PROMPT)
        n_prompt = len(tokens)
        n_out = 40 if (n_prompt + 40) % BS else 41  # away from the boundary tested below
        await complete(sim.port, PROMPT, max_tokens=n_out)
        runs = stored(await sim.sub.drain())
        for ev in runs:
            check_block_stored(ev)
        check_chained(runs)
        hashes = chain(runs)
        assert len(hashes) == len(set(hashes))
        assert len(hashes) == (n_prompt + n_out) // BS  # prompt + output full blocks
        assert len(hashes) > n_prompt // BS  # some blocks were filled while decoding
        flat = [t for ev in runs for t in ev.token_ids]
        assert flat[:n_prompt] == tokens  # the prompt, then generated tokens


async def test_last_generated_token_is_not_cached():
    """vLLM never computes the KV of the final sampled token, so a block it would fill stays
    unstored: with prompt + output a multiple of the block size, the last block is not stored."""
    async with running() as sim:
        tokens = await tokenize(sim.port, PROMPT)
        n_prompt = len(tokens)
        n_out = BS - n_prompt % BS + 2 * BS  # prompt + output ends exactly on a block boundary
        assert (n_prompt + n_out) % BS == 0
        await complete(sim.port, PROMPT, max_tokens=n_out)
        hashes = chain(stored(await sim.sub.drain()))
        assert len(hashes) == (n_prompt + n_out - 1) // BS


async def test_eviction_reports_removed_blocks():
    options: dict[str, object] = {"kv-cache-size": 300, "max-model-len": 2048}
    async with running(options=options) as sim:
        # Four distinct prompts of ~88 blocks each overflow the 300-block cache, but by fewer blocks
        # than the first request holds.
        words = "The quick brown fox jumps over the lazy dog. " * 140
        prompts = [f"Document {i}. {words}" for i in range(4)]
        runs_by_request: list[list[BlockStored]] = []
        order: list[BlockRemoved] = []
        live: set[int] = set()

        def replay(batches: list[Batch]) -> list[BlockStored]:
            """Follow the stream: a removal names a block stored earlier and still held."""
            runs = []
            for ev in (e for b in batches for e in b.events):
                if isinstance(ev, BlockStored):
                    check_block_stored(ev)
                    assert not set(ev.block_hashes) & live, "stored a block already held"
                    live.update(ev.block_hashes)
                    runs.append(ev)
                elif isinstance(ev, BlockRemoved):
                    assert ev.medium == "GPU"
                    assert set(ev.block_hashes) <= live, "removed a hash not stored (any more)"
                    live.difference_update(ev.block_hashes)
                    order.append(ev)
                else:
                    pytest.fail(f"unexpected {ev}")
            return runs

        n_prompt = []
        for prompt in prompts:
            answer = await complete(sim.port, prompt, max_tokens=8)
            n_prompt.append(answer["usage"]["prompt_tokens"])
            runs_by_request.append(replay(await sim.sub.drain()))
        n_blocks = [len(chain(r)) for r in runs_by_request]
        assert 300 < sum(n_blocks) < 300 + n_blocks[0]  # the cache had to evict
        for runs in runs_by_request:
            check_chained(runs)  # distinct first words: every chain starts at block 0
        evicted = [h for ev in order for h in ev.block_hashes]
        assert evicted, "a full cache evicted nothing"
        assert len(evicted) == len(set(evicted))
        assert len(live) <= 300
        # LRU: the oldest request's blocks go first, the tail of its chain before its head.
        oldest = chain(runs_by_request[0])
        assert evicted == oldest[::-1][: len(evicted)]

        # The first prompt again: its surviving head is a hit; the evicted prompt blocks are
        # stored anew under the same hashes, continuing from the last surviving block. (Blocks
        # filled by generated tokens differ: the output is random.)
        hits = await metric(sim.port, "vllm:prefix_cache_hits_total")
        await complete(sim.port, prompts[0], max_tokens=8)
        redo = replay(await sim.sub.drain())
        survivors = oldest[: len(oldest) - len(evicted)]
        n_full = n_prompt[0] // BS
        assert 0 < len(survivors) < n_full
        assert redo
        assert redo[0].parent_block_hash == survivors[-1]
        check_chained([BlockStored((survivors[-1],), None, (), BS), *redo])
        assert chain(redo)[: n_full - len(survivors)] == oldest[len(survivors) : n_full]
        assert await metric(sim.port, "vllm:prefix_cache_hits_total") - hits == len(survivors) * BS


async def test_reset_prefix_cache_clears_all():
    async with running(encoding="array", bind=True) as sim:
        await complete(sim.port, PROMPT, max_tokens=8)
        first = chain(stored(await sim.sub.drain()))
        assert first
        status, _ = await http(sim.port, "POST", "/reset_prefix_cache")
        assert status == 200
        cleared = await sim.sub.drain()
        assert [b.events for b in cleared] == [(AllBlocksCleared(),)]
        hits = await metric(sim.port, "vllm:prefix_cache_hits_total")

        # Nothing is cached any more: the same prompt is stored again from block 0, under the
        # same (deterministic) hashes, without a hit.
        await complete(sim.port, PROMPT, max_tokens=8)
        runs = stored(await sim.sub.drain())
        check_chained(runs)
        assert chain(runs) == first
        assert await metric(sim.port, "vllm:prefix_cache_hits_total") == hits
        seqs = [b.seq for b in sim.sub.batches]
        assert seqs == list(range(len(seqs)))
