"""The independent KV-event decoder (tests/kvsub.py), checked against a real vLLM capture.

``tests/data/vllm-0.32-cpu/kv-events.json`` holds raw ZMQ frames recorded from vLLM 0.32.0 (block
size 32, map-encoded events). The positional-array messages below are built by hand from the wire
reference (vLLM <= 0.23 layout), independently of the simulator's encoder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from tests.kvsub import (
    AllBlocksCleared,
    Batch,
    BlockRemoved,
    BlockStored,
    arecv_batch,
    decode_message,
    normalize_hash,
    recv_batch,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "vllm-0.32-cpu"
U64 = (1 << 64) - 1


def capture() -> list[list[bytes]]:
    doc = json.loads((DATA / "kv-events.json").read_text())
    return [[base64.b64decode(frame) for frame in message] for message in doc["messages"]]


def frames(payload: object, topic: str = "kv@pod:8000@m", seq: int = 0) -> list[bytes]:
    return [topic.encode(), seq.to_bytes(8, "big"), msgpack.packb(payload)]


# --------------------------------------------------------------------------- real vLLM capture


def test_capture_framing_and_sequence():
    raw = capture()
    batches = [decode_message(m) for m in raw]
    assert all(len(m) == 3 for m in raw)
    assert [b.seq for b in batches] == [5, 6, 7, 8]  # consecutive, from one publisher
    assert {b.topic for b in batches} == {"kv@tiny"}
    assert [b.dp_rank for b in batches] == [0, 0, 0, 0]  # publish() fills the rank
    ts = [b.ts for b in batches]
    assert ts == sorted(ts)
    assert all(1.7e9 < t < 2.0e9 for t in ts)  # time.time() seconds


def test_capture_is_map_encoded_events_in_a_positional_batch():
    for message in capture():
        batch = msgpack.unpackb(message[2], raw=False, strict_map_key=False)
        assert isinstance(batch, list)
        assert len(batch) == 3
        for event in batch[1]:
            assert isinstance(event, dict)
            assert event["type"] == "BlockStored"


def test_capture_block_stored_fields():
    every = [e for m in capture() for e in decode_message(m).events]
    events = [e for e in every if isinstance(e, BlockStored)]
    assert len(events) == len(every) == 4
    for ev in events:
        assert ev.block_size == 32
        assert ev.block_hashes
        assert len(ev.token_ids) == len(ev.block_hashes) * ev.block_size
        assert all(0 <= h <= U64 for h in ev.block_hashes)
        assert ev.medium == "GPU"  # even on CPU
        assert ev.lora_name is None
    assert [len(e.block_hashes) for e in events] == [1, 32, 1, 33]


def test_capture_parent_hash_semantics():
    stored = [e for m in capture() for e in decode_message(m).events if isinstance(e, BlockStored)]
    assert len(stored) == 4
    first, prompt, decode, chat = stored
    # A run that starts at block 0 has no parent.
    assert prompt.parent_block_hash is None
    assert chat.parent_block_hash is None
    # The block filled while decoding continues the prompt's chain: its parent is the prompt's
    # last block.
    assert decode.parent_block_hash == prompt.block_hashes[-1]
    # A run that does not start at block 0 names a block stored earlier (before the capture).
    assert first.parent_block_hash is not None
    assert first.parent_block_hash not in prompt.block_hashes
    # Different prompts start different chains; all hashes in the capture are distinct.
    every = [h for e in stored for h in e.block_hashes]
    assert len(every) == len(set(every))


def test_capture_token_ids_are_the_prompt_tokens():
    """The /tokenize answer in the same capture is a prefix of the completion prompt."""
    tokenized = json.loads((DATA / "tokenize.json").read_text())["tokens"]
    prompt = decode_message(capture()[1]).events[0]
    assert isinstance(prompt, BlockStored)
    assert list(prompt.token_ids[: len(tokenized)]) == tokenized


def test_capture_reencoded_as_positional_arrays_decodes_identically():
    """The same batches in the vLLM <= 0.23 layout (positional events) give the same result."""
    order = ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium"]
    order += ["lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind"]
    for message in capture():
        batch = msgpack.unpackb(message[2], raw=False, strict_map_key=False)
        positional = [
            batch[0],
            [[ev["type"], *(ev.get(k) for k in order)] for ev in batch[1]],
            batch[2],
        ]
        again = [message[0], message[1], msgpack.packb(positional)]
        assert decode_message(again) == decode_message(message)


# --------------------------------------------------------------------------- positional arrays


def test_positional_block_stored_vllm_023_layout():
    tokens = list(range(100, 108))
    ev = ["BlockStored", [11, 22], None, tokens, 4, None, "GPU", None]
    batch = decode_message(frames([1_700_000_000.5, [ev], 0], seq=7))
    assert batch == Batch(
        topic="kv@pod:8000@m",
        seq=7,
        ts=1_700_000_000.5,
        dp_rank=0,
        events=(BlockStored((11, 22), None, tuple(tokens), 4, None, "GPU"),),
    )


def test_positional_block_stored_with_all_trailing_fields():
    ev = ["BlockStored", [5], 4, [1, 2], 2, None, "CPU", "sql-lora", [None], 0, "full_attention"]
    ev.append(None)  # kv_cache_spec_sliding_window
    ev.append("future-field")  # appended by some later version: ignored
    (stored,) = decode_message(frames([1.0, [ev]])).events
    assert stored == BlockStored((5,), 4, (1, 2), 2, "sql-lora", "CPU")


def test_positional_missing_trailing_fields_are_none():
    # The oldest layout: no medium, no lora_name (and lora_id omitted too).
    (stored,) = decode_message(frames([1.0, [["BlockStored", [5], 9, [1, 2], 2]]])).events
    assert stored == BlockStored((5,), 9, (1, 2), 2, None, None)
    (removed,) = decode_message(frames([1.0, [["BlockRemoved", [5]]]])).events
    assert removed == BlockRemoved((5,), None)


def test_positional_removed_and_cleared():
    events = [["BlockRemoved", [7], "GPU"], ["BlockRemoved", [8], "GPU", 0], ["AllBlocksCleared"]]
    batch = decode_message(frames([2.0, events, 0]))
    assert batch.events == (
        BlockRemoved((7,), "GPU"),
        BlockRemoved((8,), "GPU"),
        AllBlocksCleared(),
    )


def test_two_element_batch_has_no_rank():
    batch = decode_message(frames([3, [["AllBlocksCleared"]]]))
    assert batch.dp_rank is None
    assert batch.ts == 3.0
    assert isinstance(batch.ts, float)


def test_map_batch_and_map_events():
    payload = {
        "ts": 4.5,
        "events": [
            {"type": "BlockStored", "block_hashes": [1], "token_ids": [3, 4], "block_size": 2},
            {"type": "BlockRemoved", "block_hashes": [1], "medium": "GPU", "unknown": 1},
            {"type": "AllBlocksCleared"},
        ],
        "data_parallel_rank": 2,
    }
    batch = decode_message(frames(payload, seq=U64))
    assert batch.seq == U64
    assert batch.dp_rank == 2
    assert batch.events == (
        BlockStored((1,), None, (3, 4), 2, None, None),
        BlockRemoved((1,), "GPU"),
        AllBlocksCleared(),
    )


def test_empty_batch():
    assert decode_message(frames([5.0, [], 0])).events == ()


# --------------------------------------------------------------------------- hash forms


def test_hash_representations():
    assert normalize_hash(0) == 0
    assert normalize_hash(U64) == U64
    assert normalize_hash(-1) == U64  # legacy builtin hash: int64 bit-cast
    assert normalize_hash(-(1 << 63)) == 1 << 63
    assert normalize_hash(b"\x01\x02") == 0x0102  # short: left-padded
    digest = bytes(range(32))
    assert normalize_hash(digest) == int.from_bytes(digest[-8:], "big")


def test_bytes_hash_is_what_int_mode_would_send():
    """VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1 sends ``int.from_bytes(h, "big") & (2**64-1)``."""
    none_hash = hashlib.sha256(b"\x61\x30").digest()  # sha256(cbor("0")), the reference's vector
    assert none_hash.hex() == "4e1195df020de59e0d65a33a4279f1183e7ae4e5d980e309f8b55adff2e61c3e"
    as_int = int.from_bytes(none_hash, "big") & U64
    ev_bytes = ["BlockStored", [none_hash], none_hash, [1], 1, None, "GPU", None]
    ev_int = ["BlockStored", [as_int], as_int, [1], 1, None, "GPU", None]
    assert decode_message(frames([1.0, [ev_bytes]])) == decode_message(frames([1.0, [ev_int]]))


def test_negative_hashes_in_events():
    ev = ["BlockStored", [-2, 3], -1, [0, 0, 0, 0], 2, None, "GPU", None]
    (stored,) = decode_message(frames([1.0, [ev]])).events
    assert isinstance(stored, BlockStored)
    assert stored.block_hashes == (U64 - 1, 3)
    assert stored.parent_block_hash == U64


def test_results_are_frozen():
    batch = decode_message(frames([1.0, [["BlockRemoved", [1], "GPU"]]]))
    with pytest.raises(AttributeError):
        batch.seq = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        batch.events[0].medium = "CPU"  # type: ignore[misc, union-attr]
    hash(batch)


def test_timestamp_is_plausible_for_live_use():
    batch = decode_message(frames([time.time(), []]))
    assert abs(batch.ts - time.time()) < 5


# --------------------------------------------------------------------------- malformed input

GOOD = [1.0, [["AllBlocksCleared"]], 0]


def _bad_payload(payload: object) -> list[bytes]:
    return frames(payload)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        pytest.param([b"t", b"\0" * 8], "exactly 3 frames", id="two-frames"),
        pytest.param([b"t", b"\0" * 8, msgpack.packb(GOOD), b""], "exactly 3 frames", id="four"),
        pytest.param([], "exactly 3 frames", id="no-frames"),
        pytest.param(b"t", "list of frames", id="not-a-list"),
        pytest.param(["t", b"\0" * 8, msgpack.packb(GOOD)], "frame 0", id="str-frame"),
        pytest.param([b"\xff\xfe", b"\0" * 8, msgpack.packb(GOOD)], "utf-8", id="topic-utf8"),
        pytest.param([b"t", b"\0" * 7, msgpack.packb(GOOD)], "8 bytes", id="seq-short"),
        pytest.param([b"t", b"\0" * 9, msgpack.packb(GOOD)], "8 bytes", id="seq-long"),
        pytest.param([b"t", b"\0" * 8, b"\xc1"], "msgpack", id="payload-invalid"),
        pytest.param([b"t", b"\0" * 8, b""], "msgpack", id="payload-empty"),
        pytest.param([b"t", b"\0" * 8, msgpack.packb(GOOD) + b"\x00"], "msgpack", id="trailing"),
        pytest.param([b"t", b"\0" * 8, msgpack.packb(GOOD)[:-1]], "msgpack", id="truncated"),
    ],
)
def test_malformed_frames(message: object, match: str):
    with pytest.raises(ValueError, match=match):
        decode_message(message)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        pytest.param(7, "array or a map", id="batch-int"),
        pytest.param([1.0], "2 or 3 elements", id="batch-1"),
        pytest.param([1.0, [], 0, 0], "2 or 3 elements", id="batch-4"),
        pytest.param({"ts": 1.0}, "lacks", id="map-no-events"),
        pytest.param(["now", []], "ts", id="ts-str"),
        pytest.param([True, []], "ts", id="ts-bool"),
        pytest.param([1.0, {"a": 1}], "events", id="events-map"),
        pytest.param([1.0, [], "0"], "data_parallel_rank", id="rank-str"),
        pytest.param([1.0, [7]], "array or a map", id="event-int"),
        pytest.param([1.0, [[]]], "string tag", id="event-empty"),
        pytest.param([1.0, [[3, [1]]]], "string tag", id="tag-int"),
        pytest.param([1.0, [["BlockMoved", [1]]]], "unknown event type", id="tag-unknown"),
        pytest.param([1.0, [{"block_hashes": [1]}]], "'type'", id="map-no-type"),
        pytest.param([1.0, [{"type": "Nope"}]], "unknown event type", id="map-type-unknown"),
        pytest.param([1.0, [["BlockStored", [1], None, [1]]]], "at least 4", id="stored-short"),
        pytest.param([1.0, [["BlockRemoved"]]], "at least 1", id="removed-short"),
        pytest.param([1.0, [["BlockStored", None, None, [1], 1]]], "block_hashes", id="hashes-nil"),
        pytest.param([1.0, [["BlockStored", 5, None, [1], 1]]], "array of hashes", id="hashes-int"),
        pytest.param([1.0, [["BlockStored", ["x"], None, [1], 1]]], "int or bytes", id="hash-str"),
        pytest.param([1.0, [["BlockStored", [1.5], None, [1], 1]]], "int or bytes", id="hash-fl"),
        pytest.param([1.0, [["BlockStored", [b""], None, [1], 1]]], "empty bytes", id="hash-b0"),
        pytest.param([1.0, [["BlockStored", [1], "p", [1], 1]]], "parent", id="parent-str"),
        pytest.param([1.0, [["BlockStored", [1], None, "ab", 1]]], "token_ids", id="tokens-str"),
        pytest.param([1.0, [["BlockStored", [1], None, [1, "a"], 2]]], "token_ids", id="tok-elt"),
        pytest.param([1.0, [["BlockStored", [1], None, [1], 0]]], "block_size", id="size-0"),
        pytest.param([1.0, [["BlockStored", [1], None, [1], "1"]]], "block_size", id="size-str"),
        pytest.param(
            [1.0, [["BlockStored", [1], None, [1], 1, None, 3]]], "medium", id="medium-int"
        ),
        pytest.param(
            [1.0, [["BlockStored", [1], None, [1], 1, None, "GPU", 9]]], "lora_name", id="lora"
        ),
        pytest.param(
            [1.0, [{"type": "BlockStored", "block_hashes": [1], "block_size": 1}]],
            "token_ids",
            id="map-stored-no-tokens",
        ),
        pytest.param([1.0, [["BlockRemoved", [1], 5]]], "medium", id="removed-medium-int"),
    ],
)
def test_malformed_payloads(payload: object, match: str):
    with pytest.raises(ValueError, match=match):
        decode_message(_bad_payload(payload))


def test_out_of_range_hash_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        normalize_hash(1 << 64)
    with pytest.raises(ValueError, match="outside"):
        normalize_hash(-(1 << 63) - 1)
    with pytest.raises(ValueError, match="int or bytes"):
        normalize_hash(True)


# --------------------------------------------------------------------------- receive helpers


async def test_receive_helpers_over_inproc():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    sub = ctx.socket(zmq.SUB)
    try:
        pub.bind("inproc://kvsub-test")
        sub.setsockopt(zmq.SUBSCRIBE, b"kv@")
        sub.connect("inproc://kvsub-test")
        assert pub.poll(2000), "subscription never reached the publisher"
        assert pub.recv() == b"\x01kv@"  # XPUB sees the subscription: no slow-joiner race
        with pytest.raises(TimeoutError):
            recv_batch(sub, 0.01)
        with pytest.raises(TimeoutError):
            await arecv_batch(sub, 0.01)
        pub.send_multipart(frames([1.0, [["AllBlocksCleared"]], 0], seq=1))
        pub.send_multipart(frames([2.0, [["AllBlocksCleared"]], 0], topic="other", seq=2))
        pub.send_multipart(frames([3.0, [["BlockRemoved", [4], "GPU"]], 0], seq=3))
        assert recv_batch(sub, 2).events == (AllBlocksCleared(),)
        third = await arecv_batch(sub, 2)  # "other" is filtered out by the subscription
        assert (third.seq, third.events) == (3, (BlockRemoved((4,), "GPU"),))
    finally:
        pub.close(linger=0)
        sub.close(linger=0)
        ctx.term()
