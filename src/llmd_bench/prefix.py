"""Prefix-cache routing costs, in this process: what the router spends per request to match a
prompt, what a KV event costs to index, and what an index costs in memory.

- ``approx``: ``approx-prefix-cache-producer`` on 8 endpoints that already hold the prompt's
  long shared prefix (earlier requests recorded there), for 8k- and 100k-token chat prompts of
  a shared prefix and a new question: the estimate (the rendering), hashing, matching, and
  recording, per request (``produce`` + ``pre_request``). Budget: 5 ms at 100k.
- ``precise``: ``token-producer`` with the model's tokenizer (``local``) and
  ``precise-prefix-cache-producer`` on 8 endpoints whose KV events hold the prefix, per request
  at 1k, 10k and 100k tokens: *cold* (every request a new text: tokenized whole) and *seen*
  (the shared prefix seen before: tokenized from the prefix store, then a new question).
  Budget: 35 ms at 100k seen (llm-d's sizing guide: about 356 ms per 100k-token request).
- ``events``: KV event messages as vLLM publishes them (map encoding, 16 blocks of 16 tokens
  each, chained), decoded and indexed: events and blocks per CPU-second (one core).
- ``memory``: bytes per entry of each index, from tracemalloc, over a million entries.

CPU time is ``time.process_time`` (this process, all threads: the tokenizer's Rust threads
count), reported per request; each figure is the median of the repeated runs.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from llmd_router.datalayer import Endpoint
from llmd_router.datalayer.inflight import InFlightLedger
from llmd_router.datalayer.kvevents import BlockStored, decode_message
from llmd_router.datalayer.kvindex import ApproxPrefixIndex, PreciseIndex
from llmd_router.framework import (
    TOKENIZED_PROMPT,
    CycleState,
    PluginHandle,
    ProfileResult,
    SchedulingResult,
)
from llmd_router.parsing import parse_request
from llmd_router.plugins.producers.approx_prefix_cache_producer import ApproxPrefixCacheProducer
from llmd_router.plugins.producers.precise_prefix_cache_producer import (
    PrecisePrefixCacheProducer,
)
from llmd_router.plugins.producers.token_producer import TokenProducer

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BUDGET_APPROX_MS", "BUDGET_PRECISE_MS", "Figures", "measure", "table"]

BUDGET_APPROX_MS: Final = 5.0  # prefix matching at 100k tokens
BUDGET_PRECISE_MS: Final = 35.0  # precise routing at 100k tokens, prefix seen
ENDPOINTS: Final = tuple(Endpoint(f"pod-{i}", f"10.0.0.{i}", 8000) for i in range(8))
TINY_MODEL: Final = Path(__file__).resolve().parents[2] / "tests" / "data" / "tiny-llama"
_WORDS: Final = (
    "the model server cache block route queue load fast prompt answer system user data value "
    "state point order group field light water night paper story world house green quiet"
).split()


@dataclass(frozen=True, slots=True)
class Figures:
    approx_ms: dict[int, float]  # prompt tokens -> ms of CPU per request
    precise_cold_ms: dict[int, float]
    precise_seen_ms: dict[int, float]
    events_per_s: float
    blocks_per_s: float
    approx_bytes_per_entry: float
    precise_bytes_per_entry: float


def text_of(tokens: int, seed: int) -> str:
    """About ``tokens`` tokens of words (four bytes a token, as the estimate counts)."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < tokens * 4:
        word = rng.choice(_WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def chat(system: str, question: str) -> Any:
    body = msgspec.json.encode(
        {
            "model": "tiny",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
        }
    )
    return parse_request("/v1/chat/completions", {}, body, "r")


def _cpu_ms(fn: Callable[[int], None], rounds: int) -> float:
    """The median CPU time of ``fn(i)`` in milliseconds."""
    samples = []
    for i in range(rounds):
        started = time.process_time()
        fn(i)
        samples.append((time.process_time() - started) * 1000)
    return statistics.median(samples)


def _result(endpoint: Endpoint) -> SchedulingResult:
    return SchedulingResult("default", {"default": ProfileResult((endpoint,))})


def approx_ms(tokens: int, rounds: int) -> float:
    producer = ApproxPrefixCacheProducer("approx", ApproxPrefixCacheProducer.Params())
    producer.bind(PluginHandle({}, InFlightLedger()))
    system = text_of(tokens, seed=1)
    for i, endpoint in enumerate(ENDPOINTS):  # every endpoint holds the prefix already
        cycle = CycleState()
        request = chat(system, f"warm-up question {i}")
        producer.produce(cycle, request, ENDPOINTS)
        producer.pre_request(cycle, request, _result(endpoint))

    def one(i: int) -> None:
        cycle = CycleState()
        request = chat(system, f"question number {i} about something new")
        producer.produce(cycle, request, ENDPOINTS)
        producer.pre_request(cycle, request, _result(ENDPOINTS[i % len(ENDPOINTS)]))

    return _cpu_ms(one, rounds)


def _precise(tokenizer_dir: Path) -> tuple[TokenProducer, PrecisePrefixCacheProducer]:
    tokens = TokenProducer(
        "token-producer",
        msgspec.convert({"local": {"path": str(tokenizer_dir)}}, TokenProducer.Params),
    )
    precise = PrecisePrefixCacheProducer(
        "precise", msgspec.convert({}, PrecisePrefixCacheProducer.Params)
    )
    return tokens, precise


def precise_ms(tokens: int, rounds: int, tokenizer_dir: Path, *, seen: bool) -> float:
    tokenizer, producer = _precise(tokenizer_dir)
    system = text_of(tokens, seed=2)
    # The servers' KV events hold the prompt's prefix on every endpoint.
    cycle = CycleState()
    tokenizer.produce(cycle, chat(system, "warm-up"), ENDPOINTS)
    prompt = cycle.get(TOKENIZED_PROMPT)
    assert prompt is not None
    ids = prompt.prompts[0]
    assert isinstance(ids, list)
    for n, endpoint in enumerate(ENDPOINTS):
        hashes = [n << 32 | b for b in range(len(ids) // 16)]
        producer.index.stored(endpoint.key, hashes, None, ids[: len(hashes) * 16], 16)

    def one(i: int) -> None:
        text = system if seen else text_of(tokens, seed=1000 + i)
        cycle = CycleState()
        request = chat(text, f"question number {i} about something new")
        tokenizer.produce(cycle, request, ENDPOINTS)
        producer.produce(cycle, request, ENDPOINTS)
        producer.pre_request(cycle, request, _result(ENDPOINTS[0]))

    return _cpu_ms(one, rounds)


def event_frames(messages: int, blocks: int = 16, block_size: int = 16) -> list[list[bytes]]:
    """vLLM-like messages: each a BlockStored of ``blocks`` new blocks chained on the last."""
    rng = random.Random(5)
    frames = []
    parent: int | None = None
    for seq in range(messages):
        if seq % 64 == 0:
            parent = None  # a new prompt now and then
        hashes = [rng.getrandbits(64) for _ in range(blocks)]
        event = {
            "type": "BlockStored",
            "block_hashes": hashes,
            "parent_block_hash": parent,
            "token_ids": [rng.randrange(32000) for _ in range(blocks * block_size)],
            "block_size": block_size,
            "lora_id": None,
            "medium": "GPU",
            "lora_name": None,
            "extra_keys": [None] * blocks,
            "group_idx": 0,
            "kv_cache_spec_kind": "full_attention",
        }
        parent = hashes[-1]
        payload = msgspec.msgpack.encode([time.time(), [event], 0])
        frames.append([b"kv@10.0.0.1:8000@tiny", seq.to_bytes(8, "big"), payload])
    return frames


def events_rate(messages: int) -> tuple[float, float]:
    """Events and blocks indexed per CPU-second: decoding and indexing, one core."""
    frames = event_frames(messages)
    producer = PrecisePrefixCacheProducer(
        "precise", msgspec.convert({}, PrecisePrefixCacheProducer.Params)
    )
    started = time.process_time()
    blocks = 0
    for message in frames:
        decoded = decode_message(message)
        producer.kv_batch("10.0.0.1:8000", "tiny", decoded.batch)
        blocks += sum(
            len(e.block_hashes) for e in decoded.batch.events if isinstance(e, BlockStored)
        )
    seconds = time.process_time() - started
    return len(frames) / seconds, blocks / seconds


def bytes_per_entry(entries: int) -> tuple[float, float]:
    """Bytes per entry of the approximate and the precise index, ``entries`` entries each,
    over 8 endpoints sharing half their blocks."""
    gc.collect()
    tracemalloc.start()
    approx = ApproxPrefixIndex(entries)
    per = entries // len(ENDPOINTS)
    for n, endpoint in enumerate(ENDPOINTS):
        keys = [k if k % 2 else k + n * entries for k in range(per)]
        approx.record(endpoint.key, keys)
    approx_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(approx) == entries
    del approx
    gc.collect()
    rng = random.Random(9)
    tokens = [rng.randrange(32000) for _ in range(per * 16)]
    tracemalloc.start()
    precise = PreciseIndex(capacity=entries)
    for n, endpoint in enumerate(ENDPOINTS):
        run = tokens if n % 2 else [t + 1 for t in tokens]
        precise.stored(endpoint.key, [n << 40 | b for b in range(per)], None, run, 16)
    precise_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(precise) == entries
    return approx_bytes / entries, precise_bytes / entries


def measure(
    *,
    approx_tokens: tuple[int, ...] = (8000, 100_000),
    precise_tokens: tuple[int, ...] = (1000, 10_000, 100_000),
    rounds: int = 9,
    event_messages: int = 5000,
    entries: int = 1_000_000,
    tokenizer_dir: Path = TINY_MODEL,
) -> Figures:
    approx = {n: approx_ms(n, rounds) for n in approx_tokens}
    cold = {n: precise_ms(n, rounds, tokenizer_dir, seen=False) for n in precise_tokens}
    seen = {n: precise_ms(n, rounds, tokenizer_dir, seen=True) for n in precise_tokens}
    events, blocks = events_rate(event_messages)
    approx_b, precise_b = bytes_per_entry(entries)
    return Figures(approx, cold, seen, events, blocks, approx_b, precise_b)


def table(f: Figures) -> str:
    lines = [
        "| what | prompt tokens | CPU per request |",
        "|---|---:|---:|",
    ]
    for n, ms in f.approx_ms.items():
        lines.append(f"| approximate: estimate, hash, match, record | {n:,} | {ms:.2f} ms |")
    for n, ms in f.precise_cold_ms.items():
        lines.append(f"| precise, cold: tokenize whole, key, match | {n:,} | {ms:.2f} ms |")
    for n, ms in f.precise_seen_ms.items():
        lines.append(
            f"| precise, prefix seen: tokenize from the store, key, match | {n:,} | {ms:.2f} ms |"
        )
    lines += [
        "",
        f"KV events indexed: {f.events_per_s:,.0f} messages/s, {f.blocks_per_s:,.0f} blocks/s "
        "per CPU-second (decode + index, 16 blocks of 16 tokens a message)",
        f"index memory: approximate {f.approx_bytes_per_entry:.0f} B/entry "
        f"({f.approx_bytes_per_entry:.0f} MB per million), precise "
        f"{f.precise_bytes_per_entry:.0f} B/entry ({f.precise_bytes_per_entry:.0f} MB per million)",
    ]
    return "\n".join(lines)


def verdict(f: Figures) -> str:
    notes = []
    worst_approx = f.approx_ms.get(100_000)
    if worst_approx is not None:
        ok = "within" if worst_approx <= BUDGET_APPROX_MS else "OVER"
        notes.append(
            f"approximate at 100k: {worst_approx:.2f} ms, {ok} the {BUDGET_APPROX_MS:g} ms budget"
        )
    seen = f.precise_seen_ms.get(100_000)
    if seen is not None:
        ok = "within" if seen <= BUDGET_PRECISE_MS else "OVER"
        notes.append(
            f"precise at 100k, prefix seen: {seen:.2f} ms, {ok} the {BUDGET_PRECISE_MS:g} ms budget"
        )
    return "\n".join(notes)
