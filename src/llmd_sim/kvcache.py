"""A paged KV cache with vLLM's automatic prefix caching, and the events it emits.

Theory of operation
-------------------
The cache has ``num_blocks`` blocks of ``block_size`` tokens, one of them reserved (vLLM's null
block), as vLLM's block pool. A sequence owns one block per ``block_size`` tokens of prompt plus
output. A block is *private* while it is being filled; once full, it is *committed*: named by a
hash chained from its parent's hash, its tokens and the LoRA adapter, so equal prefixes get equal
names. Committed blocks are shared and reference counted.

Free blocks wait in one queue, least recently freed first, exactly as in vLLM:

- at start every usable block is in the queue, never used;
- a sequence that finishes returns its blocks to the tail of the queue, last block first, so the
  end of a chain is reclaimed before its start; committed blocks keep their names there (they are
  still cached and can be hit), private ones are anonymous;
- a new block is taken from the head: when the head is a cached block its name is dropped, which
  is an eviction (one ``BlockRemoved`` event per block, as vLLM sends them). A cached block can
  thus be evicted while anonymous free blocks wait behind it, as on vLLM;
- a hit on a cached block in the queue takes it out of the queue (it is pinned again).

Blocks with references are never in the queue, so they are never evicted. Committing a block
whose hash is already cached shares the cached block and frees the private one without an event;
committing a new hash emits ``BlockStored`` (consecutive new blocks of a chain travel in one
event, with the hash of the block before them as parent). ``usage`` counts blocks with
references (pinned or private) over the usable blocks, as ``vllm:kv_cache_usage_perc`` does.

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
        self.usable_blocks = config.num_blocks - 1  # one block is vLLM's reserved null block
        self.prefix_caching = config.enable_prefix_caching
        self.root_hash = xxhash.xxh64_intdigest(config.hash_seed.encode())
        self._refs: dict[int, int] = {}
        # The free queue: never-used blocks first (only counted), then freed blocks in the order
        # they were freed, keyed by hash when cached and by a negative number when anonymous.
        self._fresh = self.usable_blocks
        self._queue: OrderedDict[int, None] = OrderedDict()
        self._queued_cached = 0
        self._next_anonymous = -1
        self._private = 0
        self.events: list[KVEvent] = []

    # ------------------------------------------------------------------ inspection

    @property
    def used(self) -> int:
        """Blocks with references: committed and pinned, or private."""
        return len(self._refs) + self._private

    @property
    def free(self) -> int:
        """Blocks that can be handed out (evicting the cached ones among them)."""
        return self._fresh + len(self._queue)

    @property
    def cached(self) -> int:
        """Committed blocks, pinned or waiting in the free queue."""
        return len(self._refs) + self._queued_cached

    def accounted(self) -> int:
        """Blocks accounted for: never used, queued, pinned and private. Always the usable
        blocks (a block lost to all four would be lost until the process exits)."""
        return self._fresh + len(self._queue) + len(self._refs) + self._private

    @property
    def usage(self) -> float:
        return self.used / self.usable_blocks

    def is_cached(self, block_hash: int) -> bool:
        return block_hash in self._refs or block_hash in self._queue

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
        refs, queue = self._refs, self._queue
        n = 0
        while n < limit and (hashes[n] in refs or hashes[n] in queue):
            n += 1
        return n

    def can_allocate(self, hits: Sequence[int], n_private: int) -> bool:
        revived = sum(1 for h in hits if h in self._queue)
        return revived + n_private <= self.free

    def allocate(self, hits: Sequence[int], n_private: int) -> bool:
        """Pin the cached blocks ``hits`` and take ``n_private`` new blocks, or change nothing
        and return False when there are not enough free blocks."""
        if not self.can_allocate(hits, n_private):
            return False
        for h in hits:
            self._pin(h)
        self._take_private(n_private)
        return True

    def _pin(self, block_hash: int) -> None:
        if block_hash in self._queue:
            del self._queue[block_hash]
            self._queued_cached -= 1
            self._refs[block_hash] = 1
        else:
            self._refs[block_hash] += 1

    def _take_private(self, n: int) -> None:
        for _ in range(n):
            if self._fresh:
                self._fresh -= 1
                continue
            key, _ = self._queue.popitem(last=False)
            if key >= 0:  # a cached block: handing it out drops its name
                self._queued_cached -= 1
                self.events.append(BlockRemoved((key,)))
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
        run_start: int | None = None
        run_parent: int | None = None
        prev = parent
        for i, h in enumerate(hashes):
            self._private -= 1
            if h in self._refs or h in self._queue:
                # Already cached (a twin computed it meanwhile): share it, and the private copy
                # goes back to the free queue, anonymous.
                self._pin(h)
                self._queue[self._next_anonymous] = None
                self._next_anonymous -= 1
                if run_start is not None:
                    self._stored(hashes, run_start, i, run_parent, tokens, first_block, lora)
                    run_start = None
            else:
                self._refs[h] = 1
                if run_start is None:
                    run_start, run_parent = i, prev
            prev = h
        if run_start is not None:
            self._stored(hashes, run_start, len(hashes), run_parent, tokens, first_block, lora)
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
    ) -> None:
        bs = self.block_size
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
        """A sequence lets go of its committed blocks ``held`` (in chain order) and private ones.

        Blocks go to the tail of the free queue last block first: the private ones (the end of
        the sequence), then the committed chain from its tail to its root."""
        self._private -= n_private
        queue = self._queue
        for _ in range(n_private):
            queue[self._next_anonymous] = None
            self._next_anonymous -= 1
        refs = self._refs
        for h in reversed(held):
            count = refs[h] - 1
            if count:
                refs[h] = count
            else:
                del refs[h]
                queue[h] = None
                self._queued_cached += 1

    def reset(self) -> bool:
        """Drop every cached block (vLLM's reset_prefix_cache). Refused while blocks are in use."""
        if self.used:
            return False
        self._fresh += len(self._queue)
        self._queue.clear()
        self._queued_cached = 0
        self.events.append(AllBlocksCleared())
        return True
