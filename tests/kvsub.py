"""An independent subscriber and decoder for vLLM KV events, for tests.

Written from the wire-format reference (``kv-cache-and-sim.md`` §1), not from the simulator's
encoder, so that it can judge the simulator. It uses ``msgpack`` (the simulator uses ``msgspec``).

A message is three ZMQ frames: the topic (utf-8), the sequence number (8 bytes, big-endian) and a
msgpack ``KVEventBatch``. The batch is an array ``[ts, events]`` or ``[ts, events, dp_rank]`` (or,
tolerated, a map with those field names). Each event is either a positional array with the class
name first (vLLM <= 0.23; trailing fields equal to their default are omitted, so missing trailing
fields read as None) or a map with a ``"type"`` key (vLLM >= PR #42892). Block hashes are uint64,
legacy negative int64 (bit-cast to uint64) or raw digests as bytes (last 8 bytes, big-endian).

``decode_message`` is strict about shapes and types, and raises ``ValueError`` naming what is
wrong; it is a test oracle, so unknown event tags are errors rather than skipped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import zmq

__all__ = [
    "AllBlocksCleared",
    "Batch",
    "BlockRemoved",
    "BlockStored",
    "Event",
    "arecv_batch",
    "decode_message",
    "drain",
    "normalize_hash",
    "recv_batch",
    "settle",
]

_U64_MASK: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_name: str | None = None
    medium: str | None = None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: tuple[int, ...]
    medium: str | None = None


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    pass


Event = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class Batch:
    topic: str
    seq: int
    ts: float
    dp_rank: int | None
    events: tuple[Event, ...]


# Positional field order after the tag (vLLM's struct field order). Later vLLM versions append
# fields; anything past the known ones is ignored.
FIELD_ORDER: Final[dict[str, tuple[str, ...]]] = {
    "BlockStored": (
        "block_hashes",
        "parent_block_hash",
        "token_ids",
        "block_size",
        "lora_id",
        "medium",
        "lora_name",
        "extra_keys",
        "group_idx",
        "kv_cache_spec_kind",
        "kv_cache_spec_sliding_window",
    ),
    "BlockRemoved": ("block_hashes", "medium", "group_idx"),
    "AllBlocksCleared": (),
}
# Fields that must be present (and not nil).
_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "BlockStored": ("block_hashes", "token_ids", "block_size"),
    "BlockRemoved": ("block_hashes",),
    "AllBlocksCleared": (),
}
# Positional arrays must reach at least this many fields (parent may be nil but not omitted: it
# comes before fields that have no default).
_MIN_POSITIONAL: Final = {"BlockStored": 4, "BlockRemoved": 1, "AllBlocksCleared": 0}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalize_hash(value: object, where: str = "hash") -> int:
    """A wire block hash as uint64: uint64 as is, negative int64 bit-cast, bytes' last 8 bytes."""
    if _is_int(value):
        assert isinstance(value, int)
        if -(1 << 63) <= value < 0:
            return value & _U64_MASK
        if 0 <= value <= _U64_MASK:
            return value
        raise ValueError(f"{where}: integer {value} is outside int64/uint64")
    if isinstance(value, bytes | bytearray):
        if not value:
            raise ValueError(f"{where}: empty bytes")
        return int.from_bytes(bytes(value[-8:]).rjust(8, b"\0"), "big")
    raise ValueError(f"{where}: expected int or bytes, got {type(value).__name__}")


def _hashes(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}: expected an array of hashes, got {type(value).__name__}")
    return tuple(normalize_hash(h, f"{where}[{i}]") for i, h in enumerate(value))


def _opt_str(value: object, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{where}: expected str or nil, got {type(value).__name__}")


def _event(raw: object, index: int) -> Event:
    where = f"events[{index}]"
    fields: dict[str, Any]
    if isinstance(raw, dict):
        tag = raw.get("type")
        if not isinstance(tag, str):
            raise ValueError(f"{where}: map event without a string 'type' key: {raw!r}")
        if tag not in FIELD_ORDER:
            raise ValueError(f"{where}: unknown event type {tag!r}")
        fields = {k: v for k, v in raw.items() if k != "type"}
    elif isinstance(raw, list | tuple):
        if not raw or not isinstance(raw[0], str):
            raise ValueError(f"{where}: array event must start with a string tag: {raw!r}")
        tag = raw[0]
        if tag not in FIELD_ORDER:
            raise ValueError(f"{where}: unknown event type {tag!r}")
        values = list(raw[1:])
        if len(values) < _MIN_POSITIONAL[tag]:
            raise ValueError(
                f"{where}: {tag} array has {len(values)} fields, "
                f"needs at least {_MIN_POSITIONAL[tag]}"
            )
        names = FIELD_ORDER[tag]
        fields = {name: values[i] if i < len(values) else None for i, name in enumerate(names)}
    else:
        raise ValueError(f"{where}: event must be an array or a map, got {type(raw).__name__}")

    for name in _REQUIRED[tag]:
        if fields.get(name) is None:
            raise ValueError(f"{where}: {tag} lacks required field {name!r}")
    where = f"{where} ({tag})"

    if tag == "BlockStored":
        token_ids = fields["token_ids"]
        if not isinstance(token_ids, list | tuple) or not all(_is_int(t) for t in token_ids):
            raise ValueError(f"{where}: token_ids must be an array of ints: {token_ids!r}")
        block_size = fields["block_size"]
        if not _is_int(block_size) or block_size <= 0:
            raise ValueError(f"{where}: block_size must be a positive int: {block_size!r}")
        parent = fields.get("parent_block_hash")
        return BlockStored(
            block_hashes=_hashes(fields["block_hashes"], f"{where}.block_hashes"),
            parent_block_hash=(
                None if parent is None else normalize_hash(parent, f"{where}.parent_block_hash")
            ),
            token_ids=tuple(token_ids),
            block_size=block_size,
            lora_name=_opt_str(fields.get("lora_name"), f"{where}.lora_name"),
            medium=_opt_str(fields.get("medium"), f"{where}.medium"),
        )
    if tag == "BlockRemoved":
        return BlockRemoved(
            block_hashes=_hashes(fields["block_hashes"], f"{where}.block_hashes"),
            medium=_opt_str(fields.get("medium"), f"{where}.medium"),
        )
    return AllBlocksCleared()


def decode_message(frames: list[bytes]) -> Batch:
    """Decode one KV-event message (its three ZMQ frames) into a ``Batch``."""
    if not isinstance(frames, list | tuple):
        raise ValueError(f"expected a list of frames, got {type(frames).__name__}")
    if len(frames) != 3:
        raise ValueError(f"expected exactly 3 frames (topic, seq, payload), got {len(frames)}")
    for i, frame in enumerate(frames):
        if not isinstance(frame, bytes):
            raise ValueError(f"frame {i} is {type(frame).__name__}, not bytes")
    topic_b, seq_b, payload = frames
    try:
        topic = topic_b.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"topic frame is not utf-8: {topic_b!r}") from exc
    if len(seq_b) != 8:
        raise ValueError(f"sequence frame must be 8 bytes, got {len(seq_b)}: {seq_b!r}")
    seq = int.from_bytes(seq_b, "big")
    try:
        batch = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise ValueError(f"payload is not a single msgpack object: {exc}") from exc

    if isinstance(batch, list):
        if len(batch) not in (2, 3):
            raise ValueError(f"batch array must have 2 or 3 elements, got {len(batch)}")
        ts, events = batch[0], batch[1]
        dp_rank = batch[2] if len(batch) == 3 else None
    elif isinstance(batch, dict):
        if "ts" not in batch or "events" not in batch:
            raise ValueError(f"batch map lacks 'ts' or 'events': keys {sorted(map(str, batch))}")
        ts, events = batch["ts"], batch["events"]
        dp_rank = batch.get("data_parallel_rank")
    else:
        raise ValueError(f"batch must be an array or a map, got {type(batch).__name__}")
    if not (_is_int(ts) or isinstance(ts, float)):
        raise ValueError(f"batch ts must be a number, got {ts!r}")
    if not isinstance(events, list):
        raise ValueError(f"batch events must be an array, got {type(events).__name__}")
    if dp_rank is not None and not _is_int(dp_rank):
        raise ValueError(f"batch data_parallel_rank must be an int or nil, got {dp_rank!r}")
    return Batch(
        topic=topic,
        seq=seq,
        ts=float(ts),
        dp_rank=dp_rank,
        events=tuple(_event(ev, i) for i, ev in enumerate(events)),
    )


# --------------------------------------------------------------------------- receiving


def recv_batch(sock: zmq.Socket[Any], timeout: float) -> Batch:
    """Blocking receive of one message with a timeout in seconds (raises ``TimeoutError``)."""
    if not sock.poll(int(timeout * 1000), zmq.POLLIN):
        raise TimeoutError(f"no KV event within {timeout} s")
    return decode_message(sock.recv_multipart(zmq.NOBLOCK))


async def arecv_batch(sock: zmq.Socket[Any], within: float, interval: float = 0.002) -> Batch:
    """Receive one message without blocking the event loop (the simulator may share it)."""
    deadline = time.monotonic() + within
    while True:
        if sock.poll(0, zmq.POLLIN):
            return decode_message(sock.recv_multipart(zmq.NOBLOCK))
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no KV event within {within} s")
        await asyncio.sleep(interval)


async def settle(sock: zmq.Socket[Any], seconds: float = 0.3, interval: float = 0.01) -> None:
    """Wait out the ZMQ slow-joiner window while keeping ``sock`` serviced.

    libzmq attaches a new connection's pipe to a socket (and a SUB sends its subscriptions down
    it) only when the owning thread next touches that socket. A SUB that merely sleeps after
    ``bind`` therefore stays unsubscribed until its first poll, and the publisher drops what it
    sends in the meantime. Polling (which consumes nothing) during the wait avoids that.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.poll(0, zmq.POLLIN)
        await asyncio.sleep(interval)


async def drain(sock: zmq.Socket[Any], quiet: float = 0.15) -> list[Batch]:
    """Every message that arrives until none has arrived for ``quiet`` seconds."""
    out: list[Batch] = []
    while True:
        try:
            out.append(await arecv_batch(sock, quiet))
        except TimeoutError:
            return out
