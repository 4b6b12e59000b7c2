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
from llmd_router.datalayer.kvevents.subscriber import (
    KVEventSink,
    KVEventSubscriber,
    KVSubscription,
)

__all__ = [
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "KVEvent",
    "KVEventBatch",
    "KVEventSink",
    "KVEventSubscriber",
    "KVMessage",
    "KVSubscription",
    "MalformedEvent",
    "decode_batch",
    "decode_message",
    "parse_topic",
]
