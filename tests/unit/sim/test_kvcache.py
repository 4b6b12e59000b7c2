"""The paged KV cache: prefix hits, pinning, LRU eviction order and the events it emits."""

from __future__ import annotations

import random
from typing import Any

import pytest

from llmd_sim.config import CacheConfig
from llmd_sim.kvcache import AllBlocksCleared, BlockRemoved, BlockStored, KVCache

BS = 4


def make(usable: int = 8, caching: bool = True) -> KVCache:
    """A cache with ``usable`` blocks (plus the reserved null block)."""
    config = CacheConfig(block_size=BS, num_blocks=usable + 1, enable_prefix_caching=caching)
    return KVCache(config)


def fill(cache: KVCache, tokens: list[int], lora: str | None = None) -> list[int]:
    """Run one sequence's prompt through the cache as the engine does; return its chain."""
    hashes = cache.hash_blocks(tokens, lora)
    hits = cache.match(hashes, len(tokens))
    n_blocks = -(-len(tokens) // BS)
    assert cache.allocate(hashes[:hits], n_blocks - hits)
    held = hashes[:hits] + cache.commit(
        hashes[hits:], hashes[hits - 1] if hits else None, tokens[hits * BS :], 0, lora
    )
    private = n_blocks - len(held)
    cache.release(held, private)
    return hashes


def test_hashes_are_chained_full_blocks_only():
    cache = make()
    a = cache.hash_blocks(list(range(10)), None)
    assert len(a) == 2  # 10 tokens: two full blocks of 4, the partial block is not hashed
    b = cache.hash_blocks([*range(8), 99, 98, 97, 96], None)
    assert b[:2] == a and len(b) == 3
    # Same block content after a different prefix gets a different name.
    c = cache.hash_blocks([7, 7, 7, 7, *range(4, 8)], None)
    assert c[1] != a[1]
    # The adapter is part of the name.
    assert cache.hash_blocks(list(range(8)), "sql-lora") != a
    # Hashing a suffix from a parent continues the same chain.
    assert cache.hash_blocks(list(range(4, 8)), None, parent=a[0]) == a[1:]


def test_repeated_prompt_hits_all_but_the_last_token():
    """vLLM never counts the last prompt token as a hit: 12 tokens hit 2 of 3 blocks."""
    cache = make()
    tokens = list(range(12))
    hashes = fill(cache, tokens)
    assert cache.match(hashes, len(tokens)) == 2
    longer = [*tokens, 50]
    assert cache.match(cache.hash_blocks(longer, None), len(longer)) == 3


def test_match_stops_at_first_missing_block():
    cache = make()
    fill(cache, list(range(8)))
    other = [*range(4), 9, 9, 9, 9, *range(8, 12), 0]
    assert cache.match(cache.hash_blocks(other, None), len(other)) == 1


def test_prefix_caching_off_never_hits_or_emits():
    cache = make(caching=False)
    tokens = list(range(12))
    hashes = fill(cache, tokens)
    assert cache.match(hashes, 13) == 0
    assert cache.take_events() == []
    assert cache.used == 0


def test_stored_event_describes_the_new_run():
    cache = make()
    tokens = list(range(12))
    hashes = fill(cache, tokens)
    (event,) = cache.take_events()
    assert event == BlockStored(tuple(hashes), None, tuple(tokens), BS, None)
    # Extending the prompt stores only the new block, with the last cached block as parent.
    more = [*tokens, 20, 21, 22, 23, 24]
    more_hashes = fill(cache, more)
    (event,) = cache.take_events()
    assert isinstance(event, BlockStored)
    assert event.block_hashes == (more_hashes[3],)
    assert event.parent_block_hash == hashes[2]
    assert event.token_ids == (20, 21, 22, 23)


def test_committing_a_cached_hash_shares_it_without_an_event():
    cache = make()
    tokens = list(range(8))
    hashes = cache.hash_blocks(tokens, None)
    assert cache.allocate([], 2) and cache.allocate([], 2)  # two sequences computing in parallel
    first = cache.commit(hashes, None, tokens, 0, None)
    second = cache.commit(hashes, None, tokens, 0, None)
    assert first == second == hashes
    assert len(cache.take_events()) == 1
    assert cache.used == 2 and all(cache.ref_count(h) == 2 for h in hashes)
    assert cache.free == 8 - 2 and cache.accounted() == 8  # the twin's copies are free again


def test_unreferenced_blocks_stay_cached_and_do_not_count_as_used():
    cache = make()
    fill(cache, list(range(8)))
    assert cache.used == 0 and cache.cached == 2 and cache.usage == 0.0


def test_eviction_is_least_recently_used_and_tail_first():
    cache = make(usable=4)
    a = fill(cache, list(range(8)))  # blocks a0 a1
    b = fill(cache, list(range(100, 108)))  # blocks b0 b1; every block is now cached
    cache.take_events()
    # Touch a again: it becomes more recently freed than b.
    assert cache.match(a, 9) == 2
    cache.allocate(a, 0)
    cache.release(a, 0)
    # One new block must evict the head of the free queue: b's tail block, not its root.
    assert cache.allocate([], 1)
    assert cache.take_events() == [BlockRemoved((b[1],))]
    assert cache.allocate([], 1)
    assert cache.take_events() == [BlockRemoved((b[0],))]
    assert cache.is_cached(a[0]) and cache.is_cached(a[1])


def test_never_used_blocks_go_first_then_the_queue_in_order():
    """As vLLM's free queue: an old cached block is evicted even while anonymous free blocks
    (freed partial blocks) wait behind it."""
    cache = make(usable=4)
    a = fill(cache, list(range(8)))  # a0 a1 cached, queued
    assert cache.allocate([], 1)  # the two never-used blocks
    assert cache.allocate([], 1)
    cache.release([], 2)  # two anonymous blocks, queued behind a
    cache.take_events()
    assert cache.free == 4 and cache.cached == 2
    assert cache.allocate([], 1)
    assert cache.take_events() == [BlockRemoved((a[1],))]


def test_pinned_blocks_are_never_evicted():
    cache = make(usable=4)
    a = cache.hash_blocks(list(range(8)), None)
    assert cache.allocate([], 2)
    cache.commit(a, None, list(range(8)), 0, None)  # a0 a1 pinned by a running sequence
    fill(cache, list(range(100, 108)))  # b0 b1 cached, free
    assert not cache.allocate([], 3)  # only two blocks can be freed
    assert not [e for e in cache.take_events() if isinstance(e, BlockRemoved)]
    assert cache.allocate([], 2)
    removed = [e for e in cache.take_events() if isinstance(e, BlockRemoved)]
    assert len(removed) == 2
    assert all(cache.is_cached(h) for h in a)
    assert cache.used == 4 and not cache.can_allocate([], 1)


def test_failed_allocation_changes_nothing():
    cache = make(usable=4)
    fill(cache, list(range(16)))
    before = (cache.used, cache.cached, cache.free)
    assert not cache.allocate([], 5)
    assert (cache.used, cache.cached, cache.free) == before


def test_usage_counts_referenced_blocks_over_usable_blocks():
    cache = make(usable=4)
    assert cache.usage == 0.0
    assert cache.allocate([], 3)
    assert cache.usage == 0.75


def test_reviving_an_evictable_block_costs_capacity():
    cache = make(usable=3)
    a = fill(cache, list(range(8)))
    assert cache.allocate([], 1)  # one private block in use
    # a0 and a1 are cached in the free queue; pinning both takes the last two free blocks.
    assert cache.can_allocate(a, 0)
    assert not cache.can_allocate(a, 1)


def test_reset_is_refused_while_blocks_are_in_use():
    cache = make()
    fill(cache, list(range(8)))
    assert cache.allocate([], 1)
    assert not cache.reset()
    cache.release([], 1)
    cache.take_events()
    assert cache.reset()
    assert cache.take_events() == [AllBlocksCleared()]
    assert cache.cached == 0


@pytest.mark.parametrize("n_tokens", [0, 3, 4, 5, 17], ids=lambda n: f"{n}-tokens")
def test_match_respects_the_last_token_rule(n_tokens: int):
    cache = make(usable=16)
    tokens = list(range(n_tokens))
    hashes = fill(cache, tokens) if n_tokens else []
    assert cache.match(hashes, n_tokens) == max(0, n_tokens - 1) // BS


@pytest.mark.parametrize("seed", range(30))
def test_every_block_is_accounted_for_whatever_the_arrivals(seed: int):
    """Sequences with shared prefixes admitted, committed and released in any order, twins
    among them (admitted before the other committed, so both compute the same prefix): no
    block is ever lost, and when every sequence has ended every block is free again."""
    rng = random.Random(seed)
    cache = make(usable=rng.randint(6, 40))
    prefixes = [[rng.randrange(100) for _ in range(rng.randint(4, 12))] for _ in range(3)]
    # Each running sequence: [tokens, chain, hits, blocks, held (None until committed)]
    running: list[list[Any]] = []
    for _ in range(300):
        action = rng.random()
        if running and action < 0.3:
            _, chain, hits, blocks, held = running.pop(rng.randrange(len(running)))
            held = held if held is not None else chain[:hits]
            cache.release(held, blocks - len(held))
        elif (pending := [r for r in running if r[4] is None]) and action < 0.6:
            seq = rng.choice(pending)
            tokens, chain, hits = seq[0], seq[1], seq[2]
            parent = chain[hits - 1] if hits else None
            seq[4] = chain[:hits] + cache.commit(chain[hits:], parent, tokens[hits * BS :], 0, None)
        else:
            tokens = rng.choice(prefixes) + [rng.randrange(100) for _ in range(rng.randint(0, 9))]
            chain = cache.hash_blocks(tokens, None)
            hits = cache.match(chain, len(tokens))
            blocks = -(-len(tokens) // BS)
            if cache.allocate(chain[:hits], blocks - hits):
                running.append([tokens, chain, hits, blocks, None])
        assert cache.accounted() == cache.usable_blocks
        assert cache.used + cache.free == cache.usable_blocks
    for _, chain, hits, blocks, committed in running:
        held = committed if committed is not None else chain[:hits]
        cache.release(held, blocks - len(held))
    assert cache.used == 0 and cache.free == cache.usable_blocks
