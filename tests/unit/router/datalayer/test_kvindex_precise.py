"""The precise prefix index: content keys learned from KV events, against a reference model and
a real vLLM capture."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest
import xxhash

from llmd_router.datalayer.kvevents import BlockStored, decode_message
from llmd_router.datalayer.kvindex.precise import BASE_ROOT, PreciseIndex, chain_keys

DATA = Path(__file__).resolve().parents[3] / "data" / "vllm-0.32-cpu"
BS = 4


def keys_of(tokens: list[int], root: int = BASE_ROOT, size: int = BS) -> list[int]:
    return chain_keys(tokens, root, size)


def request(tokens: list[int]):
    """``keys_for`` of a request made of ``tokens`` (base model only)."""
    return lambda size, lora: keys_of(
        tokens, xxhash.xxh64_intdigest(lora.encode()) if lora else BASE_ROOT, size
    )


# ---------------------------------------------------------------------------- basics


def test_stored_blocks_match_by_content_not_by_engine_hash():
    index = PreciseIndex()
    tokens = list(range(12))
    # Two servers with different engine hash algorithms: same content keys.
    index.stored("a", [101, 102, 103], None, tokens, BS)
    index.stored("b", [9, 8, 7], None, tokens[:8], BS)
    matches = index.match(["a", "b", "c"], request([*tokens, 99]))
    assert {k: (m.blocks, m.total) for k, m in matches.items()} == {"a": (3, 3), "b": (2, 3)}
    assert "c" not in matches  # a server with no events is unknown, not a zero


def test_a_child_event_is_chained_on_its_parents_key():
    index = PreciseIndex()
    index.stored("a", [1, 2], None, list(range(8)), BS)
    index.stored("a", [3], 2, list(range(8, 12)), BS)
    assert index.match(["a"], request(list(range(12))))["a"].blocks == 3
    # The same tokens after another prefix are other keys.
    assert index.match(["a"], request([50, 51, 52, 53, *range(4, 12)]))["a"].blocks == 0


def test_an_orphan_is_counted_and_skipped():
    index = PreciseIndex()
    assert not index.stored("a", [5], 4, [1, 2, 3, 4], BS)  # parent 4 never seen
    assert index.orphans == 1 and len(index) == 0


def test_the_longest_consecutive_prefix_counts_with_tier_weights():
    index = PreciseIndex()
    tokens = list(range(16))
    index.stored("a", [1, 2, 3, 4], None, tokens, BS, medium="GPU")
    index.removed("a", [2], "GPU")  # a hole at block 1: blocks 2 and 3 no longer count
    index.stored("b", [1, 2], None, tokens[:8], BS, medium="CPU")
    index.stored("b", [1, 2], None, [], BS, medium="GPU")  # block copies in another tier
    index.stored("c", [1, 2, 3], None, tokens[:12], BS, medium="CPU")
    m = index.match(["a", "b", "c"], request(tokens))
    assert (m["a"].blocks, m["a"].weighted) == (1, 1.0)
    assert (m["b"].blocks, m["b"].weighted) == (2, 2.0)  # the best tier counts
    assert m["c"].blocks == 3 and m["c"].weighted == pytest.approx(2.4)
    index.removed("b", [1, 2], "GPU")
    assert index.match(["b"], request(tokens))["b"].weighted == pytest.approx(1.6)


def test_lora_blocks_are_rooted_in_the_adapter():
    index = PreciseIndex()
    tokens = list(range(8))
    index.stored("a", [1, 2], None, tokens, BS, lora_name="sql")
    assert index.match(["a"], request(tokens), "sql")["a"].blocks == 2
    assert index.match(["a"], request(tokens), "base")["a"].blocks == 0
    assert index.match(["a"], request(tokens))["a"].blocks == 0


def test_a_cleared_server_and_a_forgotten_one_hold_nothing():
    index = PreciseIndex()
    index.stored("a", [1, 2], None, list(range(8)), BS)
    index.stored("b", [1, 2], None, list(range(8)), BS)
    index.cleared("a")
    index.forget("b")
    assert len(index) == 0 and index.servers() == ["a"]
    assert index.match(["a", "b"], request(list(range(8)))) == {
        "a": index.match(["a"], request(list(range(8))))["a"]
    }
    assert index.match(["a"], request(list(range(8))))["a"].blocks == 0


def test_a_new_block_size_starts_the_server_over():
    index = PreciseIndex()
    index.stored("a", [1, 2], None, list(range(8)), BS)
    index.stored("a", [7], None, list(range(8)), 8)
    assert index.block_size("a") == 8 and len(index) == 1
    assert index.match(["a"], request(list(range(8))))["a"].blocks == 1  # keyed by 8 now


def test_only_full_blocks_count():
    assert keys_of(list(range(7))) == keys_of(list(range(4)))
    assert keys_of([1, 2, 3]) == []


def test_the_lru_bound_holds():
    index = PreciseIndex(capacity=5)
    for i in range(20):
        index.stored("a", [1000 + i], None, [i, i, i, i], BS)
        assert len(index) <= 5
    assert index.evictions == 15


# ---------------------------------------------------------------------------- the reference


class Reference:
    """What every server holds, recomputed from scratch: per server, engine hash -> (content
    key, tiers); a key's weight on a server is the best tier of any engine block standing for
    it."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = weights
        self.servers: dict[str, dict[int, tuple[int, set[str]]]] = {}
        self.sizes: dict[str, int] = {}
        self.loras: dict[str, set[str]] = {}

    def key(self, parent_key: int, block: list[int]) -> int:
        data = b"".join((t & 0xFFFFFFFF).to_bytes(4, "little") for t in block)
        identity = xxhash.xxh64_intdigest(data)
        return xxhash.xxh64_intdigest(
            identity.to_bytes(8, "little") + parent_key.to_bytes(8, "little")
        )

    def stored(self, server, hashes, parent, tokens, size, medium, lora):
        if self.sizes.get(server, size) != size:
            self.cleared(server)
        self.sizes[server] = size
        engine = self.servers.setdefault(server, {})
        tier = (medium or "gpu").lower()
        if not tokens:
            for h in hashes:
                if h in engine:
                    engine[h][1].add(tier)
            return
        if parent is None:
            prev = xxhash.xxh64_intdigest(lora.encode()) if lora else BASE_ROOT
        elif parent in engine:
            prev = engine[parent][0]
        else:
            return
        if lora:
            self.loras.setdefault(server, set()).add(lora)
        for i, h in enumerate(hashes[: len(tokens) // size]):
            prev = self.key(prev, tokens[i * size : (i + 1) * size])
            if h in engine and engine[h][0] != prev:
                del engine[h]
            engine.setdefault(h, (prev, set()))[1].add(tier)

    def removed(self, server, hashes, medium):
        engine = self.servers.get(server, {})
        for h in hashes:
            if h in engine:
                tiers = engine[h][1]
                if medium:
                    tiers.discard(medium.lower())
                else:
                    tiers.clear()
                if not tiers:
                    del engine[h]

    def cleared(self, server):
        self.servers[server] = {}
        self.loras[server] = set()

    def weight(self, server: str, key: int) -> float:
        tiers = set().union(*(t for k, t in self.servers.get(server, {}).values() if k == key))
        return max((self.weights.get(t, 1.0) for t in tiers), default=0.0)

    def match(self, server: str, tokens: list[int], target: str | None) -> tuple[int, float]:
        size = self.sizes[server]
        lora = target if target and target in self.loras.get(server, set()) else None
        prev = xxhash.xxh64_intdigest(lora.encode()) if lora else BASE_ROOT
        blocks, score = 0, 0.0
        for i in range(len(tokens) // size):
            prev = self.key(prev, tokens[i * size : (i + 1) * size])
            w = self.weight(server, prev)
            if w == 0.0:
                break
            blocks, score = blocks + 1, score + w
        return blocks, score


class Engine:
    """A model server's cache as events describe it: chains of blocks over a few shared
    prefixes, each block's engine hash its own (salted per server, unlike content keys)."""

    def __init__(self, rng: random.Random, name: str) -> None:
        self.rng = rng
        self.name = name
        # (adapter, *token prefix in whole blocks) -> engine hash
        self.cached: dict[tuple[str | int | None, ...], int] = {}
        self.size = BS

    def events(self, prompts: list[list[int]]):
        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            prompt = rng.choice(prompts) + [rng.randrange(50) for _ in range(rng.randrange(9))]
            lora = rng.choice([None, None, "sql"])
            full = len(prompt) // self.size
            start = 0
            while start < full and (lora, *prompt[: (start + 1) * self.size]) in self.cached:
                start += 1
            if start == full:
                return []
            parent = self.cached[(lora, *prompt[: start * self.size])] if start else None
            hashes = []
            for i in range(start, full):
                h = rng.getrandbits(64)
                self.cached[(lora, *prompt[: (i + 1) * self.size])] = h
                hashes.append(h)
            medium = rng.choice([None, "GPU", "CPU"])
            return [
                (
                    "stored",
                    hashes,
                    parent,
                    prompt[start * self.size : full * self.size],
                    medium,
                    lora,
                )
            ]
        if roll < 0.8 and self.cached:
            prefix = rng.choice(list(self.cached))
            h = self.cached.pop(prefix)
            return [("removed", [h], rng.choice([None, "GPU", "CPU"]))]
        if roll < 0.87 and self.cached:
            prefix = rng.choice(list(self.cached))
            return [("stored", [self.cached[prefix]], None, [], "CPU", None)]  # offload
        if roll < 0.9:
            self.cached.clear()
            return [("cleared",)]
        return []


@pytest.mark.parametrize("seed", range(25))
def test_any_interleaving_of_events_leaves_the_index_equal_to_the_reference(seed: int):
    rng = random.Random(seed)
    weights = {"gpu": 1.0, "cpu": 0.8}
    index, ref = PreciseIndex(tier_weights=weights), Reference(weights)
    prompts = [[rng.randrange(50) for _ in range(rng.randrange(4, 24))] for _ in range(4)]
    engines = [Engine(rng, f"s{i}") for i in range(3)]
    for _ in range(250):
        engine = rng.choice(engines)
        for event in engine.events(prompts):
            if event[0] == "stored":
                _, hashes, parent, tokens, medium, lora = event
                index.stored(engine.name, hashes, parent, tokens, BS, medium, lora)
                ref.stored(engine.name, hashes, parent, tokens, BS, medium, lora)
            elif event[0] == "removed":
                index.removed(engine.name, event[1], event[2])
                ref.removed(engine.name, event[1], event[2])
            else:
                index.cleared(engine.name)
                ref.cleared(engine.name)
        probe = rng.choice(prompts) + [rng.randrange(50) for _ in range(rng.randrange(6))]
        target = rng.choice([None, "sql"])
        matches = index.match([e.name for e in engines], request(probe), target)
        for name, m in matches.items():
            blocks, score = ref.match(name, probe, target)
            assert m.blocks == blocks and m.weighted == pytest.approx(score), name
        held = sum(len({k for k, _ in ref.servers.get(e.name, {}).values()}) for e in engines)
        assert len(index) == held


# ---------------------------------------------------------------------------- a real capture


def capture_events() -> list[BlockStored]:
    doc = json.loads((DATA / "kv-events.json").read_text())
    messages = [decode_message([base64.b64decode(f) for f in m]) for m in doc["messages"]]
    return [e for m in messages for e in m.batch.events if isinstance(e, BlockStored)]


def test_a_real_vllm_capture_indexes_its_prompts():
    events = capture_events()
    index = PreciseIndex()
    results = [
        index.stored(
            "tiny", e.block_hashes, e.parent_block_hash, e.token_ids, e.block_size, e.medium
        )
        for e in events
    ]
    # The capture starts after a first block whose parent was not recorded: an orphan.
    assert results == [False, True, True, True] and index.orphans == 1
    completion, follow_up, chat = events[1], events[2], events[3]
    prompt = list(completion.token_ids) + list(follow_up.token_ids)
    m = index.match(["tiny"], request(prompt))["tiny"]
    assert (m.blocks, m.total, m.block_size) == (33, 33, 32)
    m = index.match(["tiny"], request([*chat.token_ids, 1, 2, 3]))["tiny"]
    assert (m.blocks, m.total) == (33, 33)
    # The follow-up's block is chained on the completion's last block: without the start of
    # the prompt it means nothing.
    assert index.match(["tiny"], request(list(follow_up.token_ids)))["tiny"].blocks == 0
