"""The approximate prefix index and its chained block keys."""

from __future__ import annotations

import struct

import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from llmd_router.datalayer.kvindex import ApproxPrefixIndex, block_keys, root_key, token_bytes


def reference_keys(data: bytes, model: str, block_tokens: int, max_blocks: int) -> list[int]:
    """llm-d's chain written another way: pseudo-tokens unpacked and packed back with struct."""
    data = data[: max_blocks * block_tokens * 4]
    data += bytes(-len(data) % 4)
    tokens = list(struct.unpack(f"<{len(data) // 4}I", data))
    previous = xxhash.xxh64(model.encode()).intdigest()
    keys = []
    for start in range(0, len(tokens), block_tokens):
        block = tokens[start : start + block_tokens]
        identity = xxhash.xxh64(struct.pack(f"<{len(block)}I", *block)).intdigest()
        previous = xxhash.xxh64(struct.pack("<QQ", identity, previous)).intdigest()
        keys.append(previous)
    return keys


def test_golden_keys():
    root = root_key("m")
    keys = block_keys(b"abcdefghij", root, 1, max_blocks=10)  # one token (4 bytes) per block
    assert keys == reference_keys(b"abcdefghij", "m", 1, 10)
    assert len(keys) == 3  # "abcd", "efgh", and "ij" padded to a whole token
    assert keys == [9720019493803011447, 8157108557804683162, 263918508463884897]  # frozen
    assert len(block_keys(b"ab", root, 16, max_blocks=10)) == 1  # under one block: one key
    assert block_keys(b"", root, 16, max_blocks=10) == []
    assert len(block_keys(b"x" * 100, root, 1, max_blocks=5)) == 5
    assert block_keys(b"x" * 100, root, 1, max_blocks=0) == []
    assert root_key("m", "salt") != root and root_key("m", "") == root


def test_token_ids_hash_as_their_little_endian_bytes():
    tokens = [1, 2, 3, 70000, 5]
    assert token_bytes(tokens) == struct.pack("<5I", *tokens)
    as_ids = block_keys(token_bytes(tokens), root_key("m"), 2, max_blocks=8)
    assert as_ids == reference_keys(struct.pack("<5I", *tokens), "m", 2, 8)


@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(1, 16), st.integers(0, 20))
def test_a_key_stands_for_the_whole_prefix_up_to_its_block(a, b, block_tokens, max_blocks):
    root = root_key("m")
    ka = block_keys(a, root, block_tokens, max_blocks)
    kb = block_keys(b, root, block_tokens, max_blocks)
    assert ka == reference_keys(a, "m", block_tokens, max_blocks)
    chunk = block_tokens * 4
    for i, (x, y) in enumerate(zip(ka, kb, strict=False)):
        prefix_a = a[: min((i + 1) * chunk, len(a))]
        prefix_b = b[: min((i + 1) * chunk, len(b))]
        # Zero padding makes a partial block equal to its padded self: compare padded.
        same = prefix_a + bytes(-len(prefix_a) % 4) == prefix_b + bytes(-len(prefix_b) % 4)
        assert (x == y) == same
    if ka:
        assert block_keys(a, root_key("other"), block_tokens, max_blocks)[0] != ka[0]


def test_match_counts_each_holder_until_no_endpoint_holds_a_key():
    index = ApproxPrefixIndex(100)
    index.record("a", [1, 2, 3, 4])
    index.record("b", [1, 3])
    assert index.match([1, 2, 3, 4, 5]) == {"a": 4, "b": 2}  # b lacks 2 but still gains for 3
    assert index.match([9, 1, 2]) == {}  # nobody holds the first block: nothing after it counts
    assert index.match([]) == {}


def test_lru_eviction_capacity_and_forgetting():
    index = ApproxPrefixIndex(3)
    index.record("a", [1, 2, 3])
    index.record("a", [1])  # 1 is now the most recent
    index.record("a", [4])  # evicts 2, the least recent
    assert index.match([1]) == {"a": 1} and index.match([2]) == {}
    assert index.match([3]) == {"a": 1} and index.evictions == 1
    index.set_capacity("a", 1)
    assert len(index) == 1 and index.match([4]) == {"a": 1}
    index.record("b", [4])
    index.forget("a")
    assert index.match([4]) == {"b": 1} and index.endpoints() == ["b"]
    stats = index.statistics()
    assert stats["entries"] == 1 and stats["keys"] == 1
    assert stats["endpoints"] == {"b": {"blocks": 1, "capacity": 3}}


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("record"),
            st.sampled_from("abc"),
            st.lists(st.integers(0, 30), max_size=12),
        ),
        st.tuples(st.just("forget"), st.sampled_from("abc"), st.just([])),
        st.tuples(st.just("capacity"), st.sampled_from("abc"), st.integers(1, 8)),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(operations, st.lists(st.integers(0, 30), max_size=12))
def test_the_index_equals_a_reference_model(ops, probe):
    """After any sequence of records, capacity changes and forgets, the index holds what a
    plain per-endpoint LRU list says, never more than each endpoint's capacity."""
    index = ApproxPrefixIndex(5)
    model: dict[str, list[int]] = {}  # least recent first
    capacity: dict[str, int] = {}
    for op, endpoint, arg in ops:
        if op == "record":
            assert isinstance(arg, list)
            index.record(endpoint, arg)
            held = model.setdefault(endpoint, [])
            for key in arg:
                if key in held:
                    held.remove(key)
                held.append(key)
            del held[: max(0, len(held) - capacity.get(endpoint, 5))]
        elif op == "forget":
            index.forget(endpoint)
            model.pop(endpoint, None)
            capacity.pop(endpoint, None)
        else:
            assert isinstance(arg, int)
            index.set_capacity(endpoint, arg)
            capacity[endpoint] = arg
            if endpoint in model:
                del model[endpoint][: max(0, len(model[endpoint]) - arg)]
        for name, held in model.items():
            assert len(held) <= capacity.get(name, 5)
    expected: dict[str, int] = {}
    for key in probe:
        holders = [name for name, held in model.items() if key in held]
        if not holders:
            break
        for name in holders:
            expected[name] = expected.get(name, 0) + 1
    assert index.match(probe) == expected
    assert len(index) == sum(len(held) for held in model.values())
    assert index.statistics()["keys"] == len({k for held in model.values() for k in held})
