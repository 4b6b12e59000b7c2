"""An index of prompt blocks by endpoint, from the model servers' own KV events.

Theory of operation. A server tells which blocks it cached (``BlockStored``: their engine
hashes, the hash of the block before them, their token ids) and which it dropped
(``BlockRemoved``, ``AllBlocksCleared``). Engine hashes depend on the engine's hash algorithm
and seed, so the index does not use them to match requests: it computes its own *content keys*
from the token ids, chained as the approximate index's keys are (``hashing.block_keys``), and
remembers which engine hash stands for which key on which server, as llm-d does since it stopped
reproducing engine hashes. Any engine hash algorithm then works, and a request matches by
hashing its own token ids the same way.

- A chain starts at a root: the LoRA adapter's name for an adapter's blocks, else the base
  model's (one root for every base model: a server's blocks are matched per server), with the
  request's ``cache_salt`` folded in when the first block carries one.
- ``stored``: the parent's key is the one learned for the parent's engine hash on that server
  (the root when there is no parent). A parent the index does not know (its event was lost, or
  evicted here) makes the event an *orphan*: it is counted and skipped, since its keys cannot be
  computed. An event without token ids (a CPU offload of blocks already known) adds the tier to
  the keys its engine hashes stand for.
- Each key a server holds carries the tiers holding it (``medium``, lower-cased: ``gpu``,
  ``cpu``, ...); a server's weight for a key is the best of its tiers' weights (llm-d's: GPU
  1.0, CPU 0.8; a tier without a weight counts 1.0).
- ``removed`` drops a tier's copy; a key no tier holds is forgotten. ``cleared`` and ``forget``
  drop everything a server holds (a cleared cache, a gap in its events, a restart, an endpoint
  that left).
- Each server's keys are an LRU bounded by ``capacity``, a safety net against a server whose
  removals are lost: the engine's own evictions normally keep it far smaller.

``match`` scores the longest consecutive prefix each server holds (llm-d's ``LongestPrefix``):
walking the request's keys from the first, the servers holding every key so far gain their weight
for it; the walk stops when none is left. Only full blocks count (servers cache only those).

A server's block size is the one its events carry; a request is keyed once per block size (and
per LoRA root) among the candidates. All synchronous and in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from llmd_router.datalayer.kvindex.hashing import block_keys, root_key, token_bytes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "BASE_ROOT",
    "DEFAULT_TIER_WEIGHTS",
    "SPECULATIVE",
    "PreciseIndex",
    "PreciseMatch",
    "chain_keys",
    "chain_root",
]

DEFAULT_TIER_WEIGHTS: Final = {"gpu": 1.0, "cpu": 0.8}
SPECULATIVE: Final = "speculative"  # the tier of entries assumed at routing time (weight 1.0)
_SPECULATIVE: Final = 0x5BEC_07A7_1BE5_5EED  # mixed into a key to make its handle
_U64: Final = (1 << 64) - 1
BASE_ROOT: Final = root_key("")
# Measured with tracemalloc on CPython 3.11 (``llmd-bench prefix``, a million entries over 8
# servers sharing half their blocks): the key's holder record, the engine-hash mapping with its
# tiers, and the LRU node.
BYTES_PER_ENTRY: Final = 713


def chain_root(lora: str | None = None, cache_salt: str | None = None) -> int:
    """Where a chain starts: the adapter's root or the base models', with the request's cache
    salt folded in (vLLM keys the first block with it, so salted prompts share nothing with
    others)."""
    root = root_key(lora) if lora else BASE_ROOT
    if cache_salt:
        root = root_key(f"{root:016x}", cache_salt)
    return root


def chain_keys(tokens: Sequence[int], root: int, block_size: int) -> list[int]:
    """The content keys of the full blocks of ``tokens``, chained from ``root``."""
    full = len(tokens) // block_size
    if full == 0:
        return []
    return block_keys(token_bytes(tokens[: full * block_size]), root, block_size, full)


@dataclass(frozen=True, slots=True)
class PreciseMatch:
    """A server's longest consecutive cached prefix of a request: ``blocks`` of ``total``
    (full blocks of ``block_size`` tokens), ``weighted`` by the tiers holding them."""

    blocks: int
    weighted: float
    total: int
    block_size: int


@dataclass(slots=True)
class _Server:
    block_size: int = 0
    # engine hash -> (content key, the tiers holding that engine block)
    engine: dict[int, tuple[int, set[str]]] = field(default_factory=dict)
    # content key -> tier -> engine blocks standing for it there; LRU order, most recent last
    held: OrderedDict[int, dict[str, int]] = field(default_factory=OrderedDict)
    loras: set[str] = field(default_factory=set)


class PreciseIndex:
    def __init__(
        self,
        capacity: int = 1_000_000,
        tier_weights: Mapping[str, float] | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.tier_weights = dict(DEFAULT_TIER_WEIGHTS if tier_weights is None else tier_weights)
        self._servers: dict[str, _Server] = {}
        self._holders: dict[int, dict[str, float]] = {}  # content key -> server -> weight
        self._partial: set[int] = set()  # keys some server holds with a weight below 1
        self.stored_blocks = 0
        self.removed_blocks = 0
        self.orphans = 0  # stored events whose parent was unknown
        self.unknown_removals = 0  # removed blocks the index did not hold
        self.evictions = 0  # keys dropped by the LRU bound

    # ------------------------------------------------------------------ events

    def stored(
        self,
        server: str,
        engine_hashes: Sequence[int],
        parent: int | None,
        token_ids: Sequence[int],
        block_size: int,
        medium: str | None = None,
        lora_name: str | None = None,
        cache_salt: str | None = None,
    ) -> bool:
        """A server cached these blocks. False when the event was an orphan (skipped)."""
        s = self._server(server, block_size)
        tier = (medium or "gpu").lower()
        engine = s.engine
        if not token_ids:  # blocks the server already had, now in another tier too
            known = True
            for h in engine_hashes:
                entry = engine.get(h)
                if entry is None:
                    known = False
                else:
                    self._add(server, s, h, entry[0], tier)
            if not known:
                self.orphans += 1
            return known
        if parent is None:
            root = chain_root(lora_name, cache_salt)
        else:
            entry = engine.get(parent)
            if entry is None:
                self.orphans += 1
                return False
            root = entry[0]
        if lora_name:
            s.loras.add(lora_name)
        keys = chain_keys(token_ids, root, block_size)
        for h, key in zip(engine_hashes, keys, strict=False):
            self._add(server, s, h, key, tier)
        self.stored_blocks += len(keys)
        self._bound(server, s)
        return True

    def removed(self, server: str, engine_hashes: Iterable[int], medium: str | None = None) -> None:
        """A server dropped these blocks from ``medium`` (from every tier when None)."""
        s = self._servers.get(server)
        for h in engine_hashes:
            entry = s.engine.get(h) if s is not None else None
            if s is None or entry is None:
                self.unknown_removals += 1
                continue
            key, tiers = entry
            gone = [medium.lower()] if medium else list(tiers)
            dropped = False
            for tier in gone:
                if tier in tiers:
                    tiers.discard(tier)
                    self._release(server, s, key, tier)
                    dropped = True
            if not tiers:
                del s.engine[h]
            if dropped:
                self.removed_blocks += 1
            else:
                self.unknown_removals += 1

    def speculate(self, server: str, keys: Sequence[int], block_size: int) -> list[int]:
        """Believe ``server`` holds ``keys`` until told otherwise (``unspeculate``): the blocks
        a request just routed there will be cached once its prefill runs, before its events
        say so. Returns the handles to take them back with."""
        s = self._server(server, block_size)
        handles = []
        for key in keys:
            handle = (key ^ _SPECULATIVE) & _U64
            self._add(server, s, handle, key, SPECULATIVE)
            handles.append(handle)
        self._bound(server, s)
        return handles

    def unspeculate(self, server: str, handles: Iterable[int]) -> None:
        s = self._servers.get(server)
        if s is None:
            return
        for h in handles:
            entry = s.engine.get(h)
            if entry is not None and SPECULATIVE in entry[1]:
                entry[1].discard(SPECULATIVE)
                self._release(server, s, entry[0], SPECULATIVE)
                if not entry[1]:
                    del s.engine[h]

    def cleared(self, server: str) -> None:
        """The server dropped every block (``AllBlocksCleared``, or its events cannot be
        trusted any more: a gap, a restart)."""
        s = self._servers.get(server)
        if s is None:
            return
        for key in s.held:
            self._unhold(key, server)
        s.engine.clear()
        s.held.clear()
        s.loras.clear()

    def forget(self, server: str) -> None:
        """The server left the pool."""
        self.cleared(server)
        self._servers.pop(server, None)

    # ------------------------------------------------------------------ matching

    def match(
        self,
        servers: Iterable[str],
        keys_for: Callable[[int, str | None], Sequence[int]],
        target_model: str | None = None,
    ) -> dict[str, PreciseMatch]:
        """Each known server's longest cached prefix of a request for ``target_model``.
        ``keys_for(block_size, lora)`` gives the request's content keys for a block size,
        rooted in an adapter (``lora``: the target model, for a server that has cached blocks
        of that adapter) or in the base model (None); each distinct pair is asked once."""
        groups: dict[tuple[int, str | None], list[str]] = {}
        for name in servers:
            s = self._servers.get(name)
            if s is None or s.block_size <= 0:
                continue
            lora = target_model if target_model and target_model in s.loras else None
            groups.setdefault((s.block_size, lora), []).append(name)
        out: dict[str, PreciseMatch] = {}
        holders = self._holders
        partial = self._partial
        for (size, lora), names in groups.items():
            keys = keys_for(size, lora)
            active = set(names)
            blocks: dict[str, int] = {}
            deficit = dict.fromkeys(names, 0.0)  # blocks held in tiers weighing less than 1
            position = len(keys)
            for i, key in enumerate(keys):
                held = holders.get(key)
                if not held:
                    position = i
                    break
                if not active <= held.keys():
                    for name in active - held.keys():
                        blocks[name] = i
                    active &= held.keys()
                    if not active:
                        break
                if key in partial:
                    for name in active:
                        deficit[name] += 1.0 - held[name]
            for name in active:
                blocks[name] = position
            for name in names:
                n = blocks[name]
                out[name] = PreciseMatch(n, n - deficit[name], len(keys), size)
        return out

    # ------------------------------------------------------------------ state

    def __contains__(self, server: object) -> bool:
        return server in self._servers

    def servers(self) -> list[str]:
        return list(self._servers)

    def block_size(self, server: str) -> int:
        s = self._servers.get(server)
        return s.block_size if s is not None else 0

    def loras(self, server: str) -> frozenset[str]:
        """The adapters whose blocks ``server`` has cached."""
        s = self._servers.get(server)
        return frozenset(s.loras) if s is not None else frozenset()

    def holders(self, key: int) -> dict[str, float]:
        return dict(self._holders.get(key, {}))

    def __len__(self) -> int:
        """Entries (a server holding a key) in the index."""
        return sum(len(s.held) for s in self._servers.values())

    def statistics(self) -> dict[str, object]:
        entries = len(self)
        return {
            "servers": {
                name: {"blocks": len(s.held), "blockSize": s.block_size}
                for name, s in sorted(self._servers.items())
            },
            "keys": len(self._holders),
            "entries": entries,
            "storedBlocks": self.stored_blocks,
            "removedBlocks": self.removed_blocks,
            "orphanEvents": self.orphans,
            "unknownRemovals": self.unknown_removals,
            "evictions": self.evictions,
            "approxBytes": entries * BYTES_PER_ENTRY,
        }

    # ------------------------------------------------------------------ internals

    def _server(self, name: str, block_size: int) -> _Server:
        s = self._servers.get(name)
        if s is None:
            s = self._servers[name] = _Server(block_size)
        elif s.block_size != block_size:
            self.cleared(name)  # reconfigured: what it held was keyed for another block size
            s.block_size = block_size
        return s

    def _weight(self, tiers: Mapping[str, int]) -> float:
        weights = self.tier_weights
        return max(weights.get(t, 1.0) for t in tiers)

    def _add(self, server: str, s: _Server, h: int, key: int, tier: str) -> None:
        entry = s.engine.get(h)
        if entry is not None and entry[0] != key:  # the engine reused the hash for other tokens
            for old in list(entry[1]):
                self._release(server, s, entry[0], old)
            entry = None
        if entry is None:
            entry = s.engine[h] = (key, set())
        tiers = s.held.get(key)
        if tiers is None:
            tiers = s.held[key] = {}
        else:
            s.held.move_to_end(key)
        if tier not in entry[1]:
            entry[1].add(tier)
            tiers[tier] = tiers.get(tier, 0) + 1
        self._hold(key, server, self._weight(tiers))

    def _release(self, server: str, s: _Server, key: int, tier: str) -> None:
        """One engine block in ``tier`` no longer stands for ``key`` on ``server``."""
        tiers = s.held.get(key)
        if tiers is None:  # dropped by the LRU bound already
            return
        count = tiers.get(tier, 0) - 1
        if count > 0:
            tiers[tier] = count
        else:
            tiers.pop(tier, None)
        if tiers:
            self._hold(key, server, self._weight(tiers))
        else:
            del s.held[key]
            self._unhold(key, server)

    def _hold(self, key: int, server: str, weight: float) -> None:
        held = self._holders.setdefault(key, {})
        held[server] = weight
        if weight != 1.0:
            self._partial.add(key)
        elif key in self._partial and all(w == 1.0 for w in held.values()):
            self._partial.discard(key)

    def _unhold(self, key: int, server: str) -> None:
        held = self._holders.get(key)
        if held is not None:
            held.pop(server, None)
            if not held:
                del self._holders[key]
                self._partial.discard(key)
            elif key in self._partial and all(w == 1.0 for w in held.values()):
                self._partial.discard(key)

    def _bound(self, server: str, s: _Server) -> None:
        """Keep at most ``capacity`` keys; the engine hashes of dropped keys go when the
        mapping has grown to twice that."""
        while len(s.held) > self.capacity:
            key, _ = s.held.popitem(last=False)
            self._unhold(key, server)
            self.evictions += 1
        if len(s.engine) > 2 * self.capacity:
            held = s.held
            s.engine = {h: e for h, e in s.engine.items() if e[0] in held}
