"""KV events from model servers: the wire format (``decode``) and the subscriber that reads
them over ZMQ (``subscriber``)."""

from llmd_router.datalayer.kvevents.decode import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEvent,
    KVEventBatch,
    KVMessage,
    MalformedEvent,
    decode_batch,
    decode_message,
    parse_topic,
)

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
