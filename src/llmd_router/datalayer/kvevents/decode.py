"""KV events as model servers publish them: one ZMQ message, decoded into a typed batch.

A message is three frames: the topic (``kv@<pod>@<model>`` by llm-d's convention), the
publisher's sequence number (8 bytes, big-endian), and a msgpack batch ``[ts, events, dp_rank?]``
(a map with those names is accepted too). Each event is either positional, its tag first
(vLLM up to 0.23: ``["BlockStored", hashes, parent, tokens, block_size, lora_id, medium,
lora_name, ...]``), or a map with a ``"type"`` key (later vLLM). Fields are read by position or
by name; unknown fields, and unknown event types, are ignored; trailing fields may be missing.

Block hashes arrive as unsigned or signed 64-bit ints, or as bytes (the digest, of which the
last 8 bytes big-endian are taken, as vLLM's int form does): all become a uint64.

Anything that does not have this shape raises ``MalformedEvent``, with what was wrong; the
subscriber counts it and goes on. Pure.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "KVEvent",
    "KVEventBatch",
    "KVMessage",
    "MalformedEvent",
    "decode_batch",
    "decode_message",
    "parse_topic",
]

_U64: Final = (1 << 64) - 1
# Positional fields after the tag, in vLLM's order.
_STORED: Final = ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
                  "medium", "lora_name", "extra_keys")  # fmt: skip
_REMOVED: Final = ("block_hashes", "medium")


class MalformedEvent(ValueError):
    """A message that is not a KV event batch."""


class BlockStored(msgspec.Struct, frozen=True, gc=False):
    """Blocks that became full and cached, in chain order; ``token_ids`` are all of theirs."""

    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    medium: str | None = None  # "GPU", "CPU", ...; None is the GPU
    lora_name: str | None = None
    # The request's cache_salt, when the first block of the chain carries one (vLLM puts it in
    # the block's extra keys).
    cache_salt: str | None = None


class BlockRemoved(msgspec.Struct, frozen=True, gc=False):
    block_hashes: tuple[int, ...]
    medium: str | None = None


class AllBlocksCleared(msgspec.Struct, frozen=True, gc=False):
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


class KVEventBatch(msgspec.Struct, frozen=True, gc=False):
    ts: float
    events: tuple[KVEvent, ...]
    data_parallel_rank: int | None = None
    skipped: int = 0  # events of types this decoder does not know


class KVMessage(msgspec.Struct, frozen=True, gc=False):
    topic: str
    seq: int
    batch: KVEventBatch


def _hash(value: Any) -> int:
    if isinstance(value, bool):
        raise MalformedEvent(f"a block hash must be an integer or bytes, got {value!r}")
    if isinstance(value, int):
        return value & _U64
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(bytes(value[-8:]), "big")
    raise MalformedEvent(f"a block hash must be an integer or bytes, got {type(value).__name__}")


def _hashes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise MalformedEvent(f"block_hashes must be a list, got {type(value).__name__}")
    return tuple(_hash(h) for h in value)


def _fields(event: Any, names: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    if isinstance(event, dict):
        tag = event.get("type")
        return (tag if isinstance(tag, str) else ""), event
    if isinstance(event, list) and event and isinstance(event[0], str):
        return event[0], dict(zip(names, event[1:], strict=False))
    raise MalformedEvent(f"an event must be a tagged list or a map, got {type(event).__name__}")


def _optional_str(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None or isinstance(value, str):
        return value
    raise MalformedEvent(f"{name} must be a string, got {type(value).__name__}")


def _event(raw: Any) -> KVEvent | None:
    tag, fields = _fields(raw, _STORED if _tag_of(raw) == "BlockStored" else _REMOVED)
    if tag == "BlockStored":
        tokens = fields.get("token_ids")
        size = fields.get("block_size")
        if not isinstance(tokens, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in tokens
        ):
            raise MalformedEvent("BlockStored: token_ids must be a list of integers")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise MalformedEvent(
                f"BlockStored: block_size must be a positive integer, got {size!r}"
            )
        parent = fields.get("parent_block_hash")
        lora = _optional_str(fields, "lora_name")
        return BlockStored(
            _hashes(fields.get("block_hashes")),
            None if parent is None else _hash(parent),
            tuple(tokens),
            size,
            _optional_str(fields, "medium"),
            lora,
            _salt(fields.get("extra_keys"), lora) if parent is None else None,
        )
    if tag == "BlockRemoved":
        return BlockRemoved(_hashes(fields.get("block_hashes")), _optional_str(fields, "medium"))
    if tag == "AllBlocksCleared":
        return AllBlocksCleared()
    return None  # a type this decoder does not know


def _salt(extra_keys: Any, lora: str | None) -> str | None:
    """The cache salt among the first block's extra keys: a string that is not the adapter's
    name (multimodal identifiers are tuples)."""
    if not isinstance(extra_keys, list) or not extra_keys:
        return None
    first = extra_keys[0]
    if not isinstance(first, list):
        return None
    salts = [k for k in first if isinstance(k, str) and k != lora]
    return salts[-1] if salts else None


def _tag_of(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw.get("type")
    return raw[0] if isinstance(raw, list) and raw else None


def decode_batch(payload: bytes) -> KVEventBatch:
    """The batch in a message's third frame. Raises MalformedEvent."""
    try:
        raw = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as exc:
        raise MalformedEvent(f"not msgpack: {exc}") from None
    if isinstance(raw, dict):
        ts, events, rank = raw.get("ts"), raw.get("events"), raw.get("data_parallel_rank")
    elif isinstance(raw, list) and len(raw) >= 2:
        ts, events = raw[0], raw[1]
        rank = raw[2] if len(raw) > 2 else None
    else:
        raise MalformedEvent("a batch must be [ts, events, dp_rank?] or a map")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise MalformedEvent(f"the batch's ts must be a number, got {type(ts).__name__}")
    if not isinstance(events, list):
        raise MalformedEvent(f"the batch's events must be a list, got {type(events).__name__}")
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool)):
        raise MalformedEvent(f"data_parallel_rank must be an integer, got {rank!r}")
    decoded: list[KVEvent] = []
    skipped = 0
    for raw_event in events:
        event = _event(raw_event)
        if event is None:
            skipped += 1
        else:
            decoded.append(event)
    return KVEventBatch(float(ts), tuple(decoded), rank, skipped)


def decode_message(frames: list[bytes]) -> KVMessage:
    """A whole ZMQ message: topic, sequence number, batch. Raises MalformedEvent."""
    if len(frames) != 3:
        raise MalformedEvent(f"a KV event message has 3 frames, got {len(frames)}")
    topic, seq, payload = frames
    if len(seq) != 8:
        raise MalformedEvent(f"the sequence frame has 8 bytes, got {len(seq)}")
    try:
        name = topic.decode()
    except UnicodeDecodeError:
        raise MalformedEvent("the topic is not UTF-8") from None
    return KVMessage(name, int.from_bytes(seq, "big"), decode_batch(payload))


def parse_topic(topic: str) -> tuple[str, str] | None:
    """``kv@<pod>@<model>`` as ``(pod, model)``; None for a topic of another shape."""
    parts = topic.split("@")
    if len(parts) != 3 or parts[0] != "kv" or not parts[1]:
        return None
    return parts[1], parts[2]
