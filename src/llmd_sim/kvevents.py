"""KV-cache events over ZMQ, in vLLM's wire format.

Each message has three frames: the topic, an 8-byte big-endian sequence number (0, 1, 2, ... per
publisher, as vLLM counts), and a msgpack batch ``[ts, events, data_parallel_rank]``. An event is

- ``map`` encoding (vLLM 0.24 and later): ``{"type": "BlockStored", "block_hashes": [...],
  "parent_block_hash": h | None, "token_ids": [...], "block_size": 16, "lora_id": None,
  "medium": "GPU", "lora_name": name | None, "extra_keys": [None, ...], "group_idx": 0,
  "kv_cache_spec_kind": "full_attention"}``, ``{"type": "BlockRemoved", "block_hashes": [h],
  "medium": "GPU", "group_idx": 0}``, ``{"type": "AllBlocksCleared"}``;
- ``array`` encoding (older vLLM): the same fields by position after the tag, as vLLM 0.10-0.2x
  sent them: ``["BlockStored", hashes, parent, token_ids, block_size, lora_id, medium,
  lora_name]``, ``["BlockRemoved", hashes, medium]``, ``["AllBlocksCleared"]``.

Block hashes are unsigned 64-bit integers (vLLM's default since 0.10.2). One batch is sent per
engine step that produced events. The PUB socket never blocks the event loop: beyond the
high-water mark ZMQ drops messages, as it does for vLLM.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import msgspec
import zmq

from llmd_sim.kvcache import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_sim.config import KVEventsConfig

__all__ = ["KVEventPublisher", "encode_batch", "endpoint_for"]

_log = logging.getLogger(__name__)
_ENCODER: Final = msgspec.msgpack.Encoder()
_MEDIUM: Final = "GPU"


def _event_map(event: KVEvent) -> dict[str, Any]:
    if isinstance(event, BlockStored):
        return {
            "type": "BlockStored",
            "block_hashes": list(event.block_hashes),
            "parent_block_hash": event.parent_block_hash,
            "token_ids": list(event.token_ids),
            "block_size": event.block_size,
            "lora_id": None,
            "medium": _MEDIUM,
            "lora_name": event.lora_name,
            "extra_keys": [None] * len(event.block_hashes),
            "group_idx": 0,
            "kv_cache_spec_kind": "full_attention",
        }
    if isinstance(event, BlockRemoved):
        return {
            "type": "BlockRemoved",
            "block_hashes": list(event.block_hashes),
            "medium": _MEDIUM,
            "group_idx": 0,
        }
    return {"type": "AllBlocksCleared"}


def _event_array(event: KVEvent) -> list[Any]:
    if isinstance(event, BlockStored):
        return [
            "BlockStored",
            list(event.block_hashes),
            event.parent_block_hash,
            list(event.token_ids),
            event.block_size,
            None,
            _MEDIUM,
            event.lora_name,
        ]
    if isinstance(event, BlockRemoved):
        return ["BlockRemoved", list(event.block_hashes), _MEDIUM]
    assert isinstance(event, AllBlocksCleared)
    return ["AllBlocksCleared"]


def encode_batch(events: Sequence[KVEvent], ts: float, encoding: str, dp_rank: int = 0) -> bytes:
    """The msgpack payload of one batch."""
    encode = _event_map if encoding == "map" else _event_array
    return _ENCODER.encode([ts, [encode(e) for e in events], dp_rank])


def endpoint_for(config: KVEventsConfig, index: int) -> str | None:
    """The endpoint of the ``index``-th server of a fleet: binding servers each need their own
    port, so the port is offset by the index (as vLLM offsets it per data-parallel rank)."""
    endpoint = config.endpoint
    if endpoint is None or not config.binds or index == 0:
        return endpoint
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint.rpartition(":")
        if port.isdigit():
            return f"{host}:{int(port) + index}"
    if endpoint.startswith(("ipc://", "inproc://")):
        return f"{endpoint}_{index}"
    return endpoint


class KVEventPublisher:
    """A PUB socket that sends batches with consecutive sequence numbers."""

    def __init__(
        self, context: zmq.Context[Any], config: KVEventsConfig, endpoint: str, topic: str
    ) -> None:
        self._encoding = config.encoding
        self._topic = topic.encode()
        self._socket = context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, config.hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        if config.binds:
            self._socket.bind(endpoint)
        else:
            self._socket.connect(endpoint)
        self.endpoint = endpoint
        self.topic = topic
        self.seq = 0
        self.dropped = 0

    def publish(self, events: Sequence[KVEvent], ts: float) -> None:
        if not events:
            return
        payload = encode_batch(events, ts, self._encoding)
        try:
            self._socket.send_multipart(
                [self._topic, self.seq.to_bytes(8, "big"), payload], flags=zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:
            self.dropped += 1
            _log.debug("KV event batch %d dropped: %s", self.seq, exc)
        self.seq += 1

    def close(self) -> None:
        self._socket.close(linger=0)
