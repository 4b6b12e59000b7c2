"""A paged KV cache with vLLM's automatic prefix caching, and the events it emits.

Theory of operation
-------------------
The cache holds ``num_blocks`` blocks of ``block_size`` tokens. A sequence owns one block per
``block_size`` tokens of prompt plus output. A block is *private* while it is being filled; once
full, it is *committed*: named by a hash chained from its parent's hash, its tokens and the LoRA
adapter, so equal prefixes get equal names. Committed blocks are shared and reference counted.

- A committed block with references is pinned: it is never evicted.
- When its last reference goes, it stays cached but becomes evictable, at the most-recently-used
  end of an LRU list. A sequence releases its blocks tail first, so the end of a chain is evicted
  before its beginning (a prefix without its start is useless).
- New private blocks come from empty slots first, then by evicting the least recently used
  evictable block (a ``BlockRemoved`` event per block, as vLLM sends them).
- Committing a block whose hash is already cached shares the cached block and frees the private
  one; no event. Committing a new hash emits ``BlockStored`` (consecutive new blocks of a chain
  travel in one event, with the hash of the block before them as parent).
- ``usage`` counts pinned and private blocks, not evictable ones: vLLM counts cached but
  unreferenced blocks as free, and so does ``vllm:kv_cache_usage_perc``.

A prefix match walks the hash chain from the first block and stops at the first miss. As in vLLM,
at most ``(tokens - 1) // block_size`` blocks can hit: the last prompt token is always computed.

Everything here is synchronous and deterministic; events accumulate in ``events`` until the owner
takes them (one batch per engine step, as vLLM publishes).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import xxhash

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_sim.config import CacheConfig

__all__ = ["AllBlocksCleared", "BlockRemoved", "BlockStored", "KVCache", "KVEvent"]


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_name: str | None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared

_U64 = (1 << 64) - 1


class KVCache:
    def __init__(self, config: CacheConfig) -> None:
        self.block_size = config.block_size
        self.num_blocks = config.num_blocks
        self.prefix_caching = config.enable_prefix_caching
        self.root_hash = xxhash.xxh64_intdigest(config.hash_seed.encode())
        self._refs: dict[int, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._private = 0
        self.events: list[KVEvent] = []

    # ------------------------------------------------------------------ inspection

    @property
    def used(self) -> int:
        """Blocks pinned by running sequences (committed and referenced, or private)."""
        return len(self._refs) + self._private

    @property
    def cached(self) -> int:
        """Committed blocks, pinned or evictable."""
        return len(self._refs) + len(self._evictable)

    @property
    def usage(self) -> float:
        return self.used / self.num_blocks

    def is_cached(self, block_hash: int) -> bool:
        return block_hash in self._refs or block_hash in self._evictable

    def ref_count(self, block_hash: int) -> int:
        return self._refs.get(block_hash, 0)

    def take_events(self) -> list[KVEvent]:
        events, self.events = self.events, []
        return events

    # ------------------------------------------------------------------ hashing

    def hash_blocks(
        self,
        tokens: Sequence[int],
        lora: str | None,
        *,
        start_block: int = 0,
        parent: int | None = None,
        end_token: int | None = None,
    ) -> list[int]:
        """Hashes of the full blocks of ``tokens[:end_token]`` from ``start_block`` on.

        ``parent`` is the hash of block ``start_block - 1`` (the root hash when starting at 0).
        """
        bs = self.block_size
        end = len(tokens) if end_token is None else end_token
        n_full = end // bs
        if n_full <= start_block:
            return []
        packed = array("I", tokens[start_block * bs : n_full * bs]).tobytes()
        extra = lora.encode() if lora else b""
        h = self.root_hash if parent is None else parent
        out: list[int] = []
        step = bs * 4
        digest = xxhash.xxh64_intdigest
        for off in range(0, len(packed), step):
            h = digest(h.to_bytes(8, "big") + packed[off : off + step] + extra) & _U64
            out.append(h)
        return out

    # ------------------------------------------------------------------ allocation

    def match(self, hashes: Sequence[int], num_tokens: int) -> int:
        """Leading blocks of ``hashes`` that are cached, within vLLM's ``num_tokens - 1`` rule."""
        if not self.prefix_caching:
            return 0
        limit = min(len(hashes), max(0, num_tokens - 1) // self.block_size)
        n = 0
        while n < limit and (hashes[n] in self._refs or hashes[n] in self._evictable):
            n += 1
        return n

    def can_allocate(self, hits: Sequence[int], n_private: int) -> bool:
        revived = sum(1 for h in hits if h in self._evictable)
        return revived + n_private <= self.num_blocks - self.used

    def allocate(self, hits: Sequence[int], n_private: int) -> bool:
        """Pin the cached blocks ``hits`` and take ``n_private`` new blocks, or change nothing
        and return False when the cache cannot make room."""
        if not self.can_allocate(hits, n_private):
            return False
        for h in hits:
            self._pin(h)
        self._take_private(n_private)
        return True

    def _pin(self, block_hash: int) -> None:
        if block_hash in self._evictable:
            del self._evictable[block_hash]
            self._refs[block_hash] = 1
        else:
            self._refs[block_hash] += 1

    def _take_private(self, n: int) -> None:
        empty = self.num_blocks - self.used - len(self._evictable)
        for _ in range(n - empty):
            victim, _ = self._evictable.popitem(last=False)
            self.events.append(BlockRemoved((victim,)))
        self._private += n

    def commit(
        self,
        hashes: Sequence[int],
        parent: int | None,
        tokens: Sequence[int],
        first_block: int,
        lora: str | None,
    ) -> list[int]:
        """Private blocks ``first_block..`` of a sequence are full: name them ``hashes``.

        Returns the hashes the sequence now holds references to (all of them when prefix caching
        is on; none when it is off, since the blocks then stay private).
        """
        if not self.prefix_caching or not hashes:
            return []
        bs = self.block_size
        run_start: int | None = None
        prev = parent
        run_parent: int | None = None
        for i, h in enumerate(hashes):
            self._private -= 1
            if h in self._refs or h in self._evictable:
                self._pin(h)
                if run_start is not None:
                    self._stored(hashes, run_start, i, run_parent, tokens, first_block, lora, bs)
                    run_start = None
            else:
                self._refs[h] = 1
                if run_start is None:
                    run_start, run_parent = i, prev
            prev = h
        if run_start is not None:
            self._stored(hashes, run_start, len(hashes), run_parent, tokens, first_block, lora, bs)
        return list(hashes)

    def _stored(
        self,
        hashes: Sequence[int],
        start: int,
        stop: int,
        parent: int | None,
        tokens: Sequence[int],
        first_block: int,
        lora: str | None,
        bs: int,
    ) -> None:
        lo, hi = (first_block + start) * bs, (first_block + stop) * bs
        self.events.append(
            BlockStored(
                tuple(hashes[start:stop]),
                None if parent is None or parent == self.root_hash else parent,
                tuple(tokens[lo:hi]),
                bs,
                lora,
            )
        )

    def release(self, held: Sequence[int], n_private: int) -> None:
        """A sequence lets go of its committed blocks ``held`` (in chain order) and private ones."""
        self._private -= n_private
        refs = self._refs
        for h in reversed(held):
            count = refs[h] - 1
            if count:
                refs[h] = count
            else:
                del refs[h]
                self._evictable[h] = None

    def reset(self) -> bool:
        """Drop every cached block (vLLM's reset_prefix_cache). Refused while blocks are in use."""
        if self.used:
            return False
        self._evictable.clear()
        self.events.append(AllBlocksCleared())
        return True
