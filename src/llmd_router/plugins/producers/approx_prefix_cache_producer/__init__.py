"""``approx-prefix-cache-producer``: which candidates are believed to hold the request's prefix,
from where this router sent earlier requests (llm-d's approximate prefix cache).

Theory of operation. A request's prompt tokens (``TOKENIZED_PROMPT``, from the token producer:
by default bytes at four to a token, or token ids) are cut into blocks of ``B`` tokens and each
block gets a chained key (``llmd_router.datalayer.kvindex.hashing``): a key stands for the whole
prefix up to its block, rooted in the target model and the request's ``cache_salt``.

- ``produce`` matches the keys against the index: for each candidate, the blocks it is believed
  to hold (llm-d's walk: up to the first block no endpoint holds, every holder gains one), and
  writes ``PrefixMatch(match_blocks, total_blocks, B)`` per candidate under its data key.
- ``pre_request`` records the keys on the first target of the primary profile, and of a profile
  named ``prefill`` when there is one: from then on that endpoint is believed to hold the prompt.
- Each endpoint's keys are an LRU of its capacity: its KV blocks (``num_gpu_blocks``) with
  ``autoTune``, else ``lruCapacityPerServer``, fixed when the endpoint is first recorded. An
  endpoint that left the pool is forgotten within ``PURGE_INTERVAL_S`` (checked on the request
  path, no background task).

``B`` is the first candidate's reported KV block size with ``autoTune`` (else
``blockSizeTokens``), raised to at least 64 as llm-d does. At most ``maxPrefixTokensToMatch / B``
blocks are keyed (``maxPrefixBlocksToMatch`` when the token cap is 0; both 0: the whole prompt).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, ClassVar, Final

from llmd_router.datalayer.kvindex import ApproxPrefixIndex, block_keys, root_key, token_bytes
from llmd_router.framework import (
    TOKENIZED_PROMPT,
    DataKey,
    Params,
    Plugin,
    PrefixMatch,
    Stability,
    prefix_match_key,
)
from llmd_router.framework.capabilities import UNRECORDED
from llmd_router.parsing.prompt import BYTES_PER_TOKEN, estimate

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState, PluginHandle, SchedulingResult
    from llmd_router.framework.capabilities import PoolView, PrefixIndexMetrics
    from llmd_router.parsing.prompt import TokenizedPrompt
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ApproxPrefixCacheProducer", "ApproxPrefixCacheProducerParams", "request_keys"]

_log = logging.getLogger(__name__)

MIN_BLOCK_SIZE_TOKENS: Final = 64
DEFAULT_BLOCK_SIZE_TOKENS: Final = 16
PURGE_INTERVAL_S: Final = 120.0  # llm-d's podActiveCheckInterval
PREFILL_PROFILE: Final = "prefill"  # llm-d records the target of the profile named so
MAX_STATISTICS_ENDPOINTS: Final = 100


class ApproxPrefixCacheProducerParams(Params, frozen=True):
    auto_tune: bool = True
    block_size_tokens: int = DEFAULT_BLOCK_SIZE_TOKENS
    block_size: int = 0  # deprecated (it was in characters); see __post_init__
    max_prefix_blocks_to_match: int = 2048  # deprecated: used when maxPrefixTokensToMatch is 0
    max_prefix_tokens_to_match: int = 131072
    lru_capacity_per_server: int = 31250

    def __post_init__(self) -> None:
        if not self.auto_tune and self.block_size_tokens <= 0:
            raise ValueError("blockSizeTokens must be > 0 when autoTune is false")
        if self.max_prefix_tokens_to_match < 0:
            raise ValueError(
                f"maxPrefixTokensToMatch must be >= 0, got {self.max_prefix_tokens_to_match}"
            )
        if self.max_prefix_blocks_to_match < 0:
            raise ValueError(
                f"maxPrefixBlocksToMatch must be >= 0, got {self.max_prefix_blocks_to_match}"
            )
        if self.lru_capacity_per_server < 0:
            raise ValueError(
                f"lruCapacityPerServer must be >= 0, got {self.lru_capacity_per_server}"
            )

    def configured_block_size(self) -> int:
        """``blockSizeTokens``, or the deprecated ``blockSize`` when only it was changed."""
        if self.block_size > 0 and self.block_size_tokens == DEFAULT_BLOCK_SIZE_TOKENS:
            return self.block_size
        return self.block_size_tokens


def request_keys(
    request: InferenceRequest,
    block_tokens: int,
    max_blocks: int,
    tokens: TokenizedPrompt | None = None,
) -> list[list[int]]:
    """The chained block keys of each of the request's prompts (empty prompts have none), from
    its ``tokens`` (by default, the estimate)."""
    root = root_key(request.target_model or request.model or "", request.cache_salt)
    keys = []
    for prompt in (tokens or estimate(request)).prompts:
        data = prompt if isinstance(prompt, bytes) else token_bytes(prompt)
        chain = block_keys(data, root, block_tokens, max_blocks)
        if chain:
            keys.append(chain)
    return keys


class ApproxPrefixCacheProducer(Plugin[ApproxPrefixCacheProducerParams]):
    """Per candidate, the request's prompt blocks it is believed to cache, from routing
    history."""

    TYPE: ClassVar[str] = "approx-prefix-cache-producer"
    Params: ClassVar[type[Any]] = ApproxPrefixCacheProducerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (TOKENIZED_PROMPT,)

    def __init__(
        self,
        name: str,
        params: ApproxPrefixCacheProducerParams,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, params)
        self.key = prefix_match_key(name)
        self.produces: tuple[DataKey[Any], ...] = (self.key,)
        self.index = ApproxPrefixIndex(params.lru_capacity_per_server or 31250)
        configured = params.configured_block_size()
        if 0 < configured < MIN_BLOCK_SIZE_TOKENS and configured != DEFAULT_BLOCK_SIZE_TOKENS:
            _log.warning(
                "plugin %r: blockSizeTokens %d is below the minimum of %d; %d is used",
                name,
                configured,
                MIN_BLOCK_SIZE_TOKENS,
                MIN_BLOCK_SIZE_TOKENS,
            )
        if params.block_size > 0:
            _log.warning("plugin %r: 'blockSize' is deprecated; use 'blockSizeTokens'", name)
        self._keys: DataKey[list[list[int]]] = DataKey(f"{self.TYPE}/{name}/keys")
        self._pool: PoolView | None = None
        self._metrics: PrefixIndexMetrics = UNRECORDED.prefix_index(self.TYPE, name, lambda: 0)
        self._clock = clock
        self._next_purge = clock() + PURGE_INTERVAL_S
        self.requests = 0
        self.hit_blocks = 0
        self.total_blocks = 0

    def bind(self, handle: PluginHandle) -> None:
        self._pool = handle.pool
        self._metrics = handle.metrics.prefix_index(self.TYPE, self.name, self.index_entries)

    def index_entries(self) -> int:
        """Entries in the index, over every endpoint (``llm_d_epp_prefix_indexer_size``)."""
        return len(self.index)

    # ------------------------------------------------------------------ request path

    def block_size(self, endpoints: Sequence[Endpoint]) -> int:
        size = self.params.configured_block_size()
        if self.params.auto_tune and endpoints and endpoints[0].metrics.cache_block_size > 0:
            size = endpoints[0].metrics.cache_block_size
        return max(size, MIN_BLOCK_SIZE_TOKENS)

    def max_blocks(self, block_size: int) -> int:
        params = self.params
        if params.max_prefix_tokens_to_match > 0:
            return params.max_prefix_tokens_to_match // block_size
        return params.max_prefix_blocks_to_match or sys.maxsize

    def produce(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None:
        self._purge()
        size = self.block_size(endpoints)
        keys = request_keys(request, size, self.max_blocks(size), cycle.get(TOKENIZED_PROMPT))
        cycle.put(self._keys, keys)
        matched: dict[str, int] = {}
        total = 0
        for chain in keys:
            total += len(chain)
            for endpoint, blocks in self.index.match(chain).items():
                matched[endpoint] = matched.get(endpoint, 0) + blocks
        none = PrefixMatch(0, total, size)  # shared by every candidate holding nothing
        held = {key: PrefixMatch(blocks, total, size) for key, blocks in matched.items()}
        cycle.put(self.key, {e.key: held.get(e.key, none) for e in endpoints})

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None:
        keys = cycle.get(self._keys)
        if not keys:
            return
        targets = [result.profiles[result.primary].targets[:1]]
        prefill = result.profiles.get(PREFILL_PROFILE)
        if prefill is not None and result.primary != PREFILL_PROFILE:
            targets.append(prefill.targets[:1])
        matches = cycle.get(self.key) or {}
        for (endpoint,) in (t for t in targets if t):
            if endpoint.key not in self.index:
                self.index.set_capacity(endpoint.key, self._capacity(endpoint))
            for chain in keys:
                self.index.record(endpoint.key, chain)
        primary = result.targets[0] if result.targets else None
        match = matches.get(primary.key) if primary is not None else None
        if match is not None:
            self.requests += 1
            self.hit_blocks += match.match_blocks
            self.total_blocks += match.total_blocks
            block_bytes = match.block_size_tokens * BYTES_PER_TOKEN
            self._metrics.matched(
                match.match_blocks * block_bytes, match.total_blocks * block_bytes
            )

    def _capacity(self, endpoint: Endpoint) -> int:
        blocks = endpoint.metrics.cache_num_blocks
        if self.params.auto_tune and blocks > 0:
            return blocks
        return self.params.lru_capacity_per_server or self.index.default_capacity

    def _purge(self) -> None:
        """Forget endpoints that left the pool (at most once per ``PURGE_INTERVAL_S``)."""
        now = self._clock()
        if now < self._next_purge or self._pool is None:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        present = {e.key for e in self._pool.all()}
        for endpoint in self.index.endpoints():
            if endpoint not in present:
                self.index.forget(endpoint)

    # ------------------------------------------------------------------ state

    def statistics(self) -> Mapping[str, object]:
        """llm-d's dump (the busiest endpoints by blocks, at most 100) with the index's size."""
        stats = self.index.statistics()
        per_endpoint = stats["endpoints"]
        assert isinstance(per_endpoint, dict)
        busiest = sorted(per_endpoint.items(), key=lambda kv: (-kv[1]["blocks"], kv[0]))
        return {
            "pods": [
                {"pod": name, "blocks": info["blocks"], "capacity": info["capacity"]}
                for name, info in busiest[:MAX_STATISTICS_ENDPOINTS]
            ],
            "totalPods": len(per_endpoint),
            "maxPods": MAX_STATISTICS_ENDPOINTS,
            "keys": stats["keys"],
            "entries": stats["entries"],
            "evictions": stats["evictions"],
            "approxBytes": stats["approxBytes"],
            "requests": self.requests,
            "hitRatio": self.hit_blocks / self.total_blocks if self.total_blocks else 0.0,
        }
