"""The approximate prefix index and its chained block keys."""

from __future__ import annotations

import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from llmd_router.datalayer.kvindex import ApproxPrefixIndex, chained_block_hashes


def reference_keys(data: bytes, root: bytes, chunk: int, max_blocks: int) -> list[int]:
    """The same chain written another way: a streaming hasher per block."""
    if len(data) < chunk:
        return []
    data = data[: max_blocks * chunk]
    previous = xxhash.xxh64(root).intdigest()
    keys = []
    for start in range(0, len(data), chunk):
        h = xxhash.xxh64()
        h.update(data[start : start + chunk])
        h.update(previous.to_bytes(8, "little"))
        previous = h.intdigest()
        keys.append(previous)
    return keys


def test_golden_keys():
    keys = chained_block_hashes(b"abcdefghij", b"model", 4, max_blocks=10)
    assert keys == reference_keys(b"abcdefghij", b"model", 4, 10)
    assert len(keys) == 3  # "abcd", "efgh", and the partial "ij"
    assert keys == [5859998386156947928, 2089593944191618306, 17934079228563140155]  # frozen
    assert chained_block_hashes(b"abc", b"model", 4, max_blocks=10) == []  # under one block
    assert len(chained_block_hashes(b"abcdefghij", b"m", 4, max_blocks=10, partial=False)) == 2
    assert len(chained_block_hashes(b"x" * 100, b"m", 4, max_blocks=5)) == 5


@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(1, 64), st.integers(0, 20))
def test_a_key_stands_for_the_whole_prefix_up_to_its_block(a, b, chunk, max_blocks):
    ka = chained_block_hashes(a, b"root", chunk, max_blocks=max_blocks)
    kb = chained_block_hashes(b, b"root", chunk, max_blocks=max_blocks)
    assert ka == reference_keys(a, b"root", chunk, max_blocks)
    for i, (x, y) in enumerate(zip(ka, kb, strict=False)):
        prefix_a = a[: min((i + 1) * chunk, len(a))]
        prefix_b = b[: min((i + 1) * chunk, len(b))]
        assert (x == y) == (prefix_a == prefix_b)
    if ka:
        assert chained_block_hashes(a, b"other", chunk, max_blocks=max_blocks)[0] != ka[0]


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
