"""``precise-prefix-cache-producer``: which candidates hold the request's prefix, from what the
model servers say they cached (their KV events), not from where requests were sent.

Theory of operation. The router's KV event subscriber (``llmd_router.datalayer.kvevents``)
reads every server's events, on the endpoints' own publishers (``discoverPods``, port
``podDiscoveryConfig.socketPort``) and/or a central endpoint the router binds (``zmqEndpoint``),
and hands them to this plugin, which keeps them in a ``PreciseIndex``: content keys computed
from the events' token ids, per server, tiers weighted (``kvCacheBackendConfigs``). A gap in a
server's events or a restart of its publisher drops what is known of it; its next events build
it again.

- ``produce`` keys the request's tokens (``TOKENIZED_PROMPT``; they must be the model's own,
  from a token producer with a tokenizer, else nothing can match and a warning says so) in full
  blocks of each candidate's block size, and writes per candidate ``PrefixMatch(match, total,
  B)``: ``match`` the tier-weighted longest consecutive prefix the server holds, truncated to
  whole blocks (llm-d's); ``total`` the request's full blocks.
- ``pre_request``, with ``speculativeIndexing``, assumes the chosen endpoint (and a ``prefill``
  profile's) holds the request's blocks for ``speculativeTTL``, until its own events arrive.
"""

from __future__ import annotations

import collections
import functools
import logging
import re
import time
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import msgspec

from llmd_router.datalayer.kvevents import AllBlocksCleared, BlockRemoved, BlockStored
from llmd_router.datalayer.kvevents.subscriber import DEFAULT_POD_PORT, KVSubscription
from llmd_router.datalayer.kvindex.precise import PreciseIndex, chain_keys, chain_root
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
from llmd_router.parsing.prompt import BYTES_PER_TOKEN

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.kvevents import KVEventBatch
    from llmd_router.framework import CycleState, PluginHandle, SchedulingResult
    from llmd_router.framework.capabilities import PrefixIndexMetrics
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["PrecisePrefixCacheProducer", "PrecisePrefixCacheProducerParams", "parse_duration"]

_log = logging.getLogger(__name__)

PREFILL_PROFILE: Final = "prefill"
DEFAULT_SPECULATIVE_TTL_S: Final = 2.0
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_STATISTICS_SERVERS: Final = 100


def parse_duration(text: str) -> float:
    """A Go duration (``2s``, ``500ms``, ``1m30s``) in seconds. Raises ValueError."""
    if not text or _DURATION.sub("", text) != "":
        raise ValueError(f"not a duration: {text!r} (use e.g. 2s, 500ms, 1m)")
    return sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))


class TokenProcessorConfig(Params, frozen=True):
    block_size_tokens: int = 0  # 0: unset, 16 (or the deprecated blockSize when given)
    block_size: int = 0  # deprecated name of blockSizeTokens
    hash_seed: str = ""
    hash_algorithm: Literal["", "cbor-fnv", "xxh64"] = ""

    def __post_init__(self) -> None:
        if self.block_size_tokens < 0 or self.block_size < 0:
            raise ValueError("blockSizeTokens must be greater than 0")

    @property
    def tokens_per_block(self) -> int:
        return self.block_size_tokens or self.block_size or 16


class InMemoryConfig(Params, frozen=True):
    size: int = 100_000_000
    pod_cache_size: int = 10

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"inMemoryConfig.size must be positive, got {self.size}")


class KVBlockIndexConfig(Params, frozen=True):
    in_memory_config: InMemoryConfig = msgspec.field(default_factory=InMemoryConfig)
    cost_aware_memory_config: dict[str, Any] | None = None
    redis_config: dict[str, Any] | None = None
    enable_metrics: bool = False
    metrics_logging_interval: int = 0

    def __post_init__(self) -> None:
        if self.redis_config is not None:
            raise ValueError(
                "redisConfig: a Redis-backed index is not available in this version; remove it "
                "to use the in-memory index"
            )
        if self.cost_aware_memory_config is not None:
            _capacity_of(self.cost_aware_memory_config.get("size", "2GiB"))


class BackendConfig(Params, frozen=True):
    name: str
    weight: float = 1.0


class IndexerConfig(Params, frozen=True):
    kv_block_index_config: KVBlockIndexConfig = msgspec.field(default_factory=KVBlockIndexConfig)
    kv_cache_backend_configs: tuple[BackendConfig, ...] = (
        BackendConfig(name="gpu", weight=1.0),
        BackendConfig(name="cpu", weight=0.8),
    )
    tokenizers_pool_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.tokenizers_pool_config is not None:
            raise ValueError(
                "tokenizersPoolConfig is not supported; configure a token-producer plugin instead"
            )


class PodDiscoveryConfig(Params, frozen=True):
    socket_port: int = DEFAULT_POD_PORT
    replay_socket_port: int = 0
    pod_label_selector: str = "llm-d.ai/inference-serving=true"  # accepted; the pool decides
    pod_namespace: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.socket_port < 65536:
            raise ValueError(f"socketPort must be a TCP port, got {self.socket_port}")


class KVEventsConfig(Params, frozen=True):
    zmq_endpoint: str = ""
    topic_filter: str = "kv@"
    concurrency: int = 4  # accepted; events are indexed as they are read
    engine_type: Literal["", "vllm"] = ""
    discover_pods: bool = True
    pod_discovery_config: PodDiscoveryConfig = msgspec.field(default_factory=PodDiscoveryConfig)

    def __post_init__(self) -> None:
        if self.zmq_endpoint and not self.zmq_endpoint.startswith(("tcp://", "ipc://")):
            raise ValueError(f"zmqEndpoint must be tcp:// or ipc://, got {self.zmq_endpoint!r}")
        if self.concurrency <= 0:
            raise ValueError(f"concurrency must be positive, got {self.concurrency}")


class PrecisePrefixCacheProducerParams(Params, frozen=True):
    token_processor_config: TokenProcessorConfig = msgspec.field(
        default_factory=TokenProcessorConfig
    )
    indexer_config: IndexerConfig = msgspec.field(default_factory=IndexerConfig)
    kv_events_config: KVEventsConfig = msgspec.field(default_factory=KVEventsConfig)
    speculative_indexing: bool = False
    speculative_ttl: str = msgspec.field(default="", name="speculativeTTL")

    def __post_init__(self) -> None:
        if self.speculative_ttl:
            try:
                parse_duration(self.speculative_ttl)
            except ValueError as exc:
                raise ValueError(f"invalid speculativeTTL: {exc}") from None


def _capacity_of(size: object) -> int:
    """Index entries that fit in ``size`` (bytes, or ``2GiB``-style)."""
    from llmd_router.datalayer.kvindex.precise import BYTES_PER_ENTRY  # noqa: PLC0415

    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return max(1, size // BYTES_PER_ENTRY)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*", str(size), re.IGNORECASE)
    if match is None:
        raise ValueError(f"costAwareMemoryConfig.size: not a size: {size!r} (use e.g. 2GiB)")
    unit = (match.group(2) or "B").upper().rstrip("B").rstrip("I")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
    return max(1, int(float(match.group(1)) * scale) // BYTES_PER_ENTRY)


def _keys_for(
    prompt: list[int],
    salt: str | None,
    memo: dict[tuple[int, str | None], list[int]],
    size: int,
    lora: str | None,
) -> list[int]:
    """A prompt's content keys for a block size and an adapter, computed once."""
    keys = memo.get((size, lora))
    if keys is None:
        keys = memo[size, lora] = chain_keys(prompt, chain_root(lora, salt), size)
    return keys


class PrecisePrefixCacheProducer(Plugin[PrecisePrefixCacheProducerParams]):
    """Per candidate, the request's blocks its server has cached, from its KV events."""

    TYPE: ClassVar[str] = "precise-prefix-cache-producer"
    Params: ClassVar[type[Any]] = PrecisePrefixCacheProducerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (TOKENIZED_PROMPT,)

    def __init__(
        self,
        name: str,
        params: PrecisePrefixCacheProducerParams,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, params)
        self.key = prefix_match_key(name)
        self.produces: tuple[DataKey[Any], ...] = (self.key,)
        indexer = params.indexer_config
        block_index = indexer.kv_block_index_config
        capacity = block_index.in_memory_config.size
        if block_index.cost_aware_memory_config is not None:
            capacity = _capacity_of(block_index.cost_aware_memory_config.get("size", "2GiB"))
        weights = {b.name.lower(): b.weight for b in indexer.kv_cache_backend_configs}
        self.index = PreciseIndex(capacity=capacity, tier_weights=weights)
        events = params.kv_events_config
        self.kv_subscription = KVSubscription(
            bind=events.zmq_endpoint or None,
            pod_port=events.pod_discovery_config.socket_port if events.discover_pods else None,
            topic_filter=events.topic_filter,
        )
        if events.pod_discovery_config.replay_socket_port:
            _log.warning(
                "plugin %r: replaySocketPort is not used by this version: a gap in a server's "
                "events drops what is known of it, and its next events build it again",
                name,
            )
        if not events.zmq_endpoint and not events.discover_pods:
            _log.warning(
                "plugin %r: neither zmqEndpoint nor discoverPods is set: no KV event will "
                "arrive, and nothing will match",
                name,
            )
        self.block_size = params.token_processor_config.tokens_per_block
        ttl = params.speculative_ttl
        self.speculative_ttl_s = parse_duration(ttl) if ttl else DEFAULT_SPECULATIVE_TTL_S
        self._speculated: collections.deque[tuple[float, str, list[int]]] = collections.deque()
        self._clock = clock
        self._metrics: PrefixIndexMetrics = UNRECORDED.prefix_index(self.TYPE, name, lambda: 0)
        self._warned_inexact = False
        self.batches = 0
        self.requests = 0
        self.hit_blocks = 0
        self.total_blocks = 0

    def bind(self, handle: PluginHandle) -> None:
        self._metrics = handle.metrics.prefix_index(self.TYPE, self.name, self.index_entries)

    def index_entries(self) -> int:
        return len(self.index)

    # ------------------------------------------------------------------ events

    def kv_batch(self, server: str, model: str, batch: KVEventBatch) -> None:
        self.batches += 1
        index = self.index
        for event in batch.events:
            if isinstance(event, BlockStored):
                index.stored(
                    server,
                    event.block_hashes,
                    event.parent_block_hash,
                    event.token_ids,
                    event.block_size,
                    event.medium,
                    event.lora_name,
                    event.cache_salt,
                )
            elif isinstance(event, BlockRemoved):
                index.removed(server, event.block_hashes, event.medium)
            elif isinstance(event, AllBlocksCleared):
                index.cleared(server)

    def kv_reset(self, server: str, reason: str) -> None:
        self.index.cleared(server)

    # ------------------------------------------------------------------ request path

    def produce(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None:
        self._expire()
        tokens = cycle.get(TOKENIZED_PROMPT)
        prompts: list[list[int]] = []
        if tokens is not None and tokens.exact:
            prompts = [p for p in tokens.prompts if isinstance(p, list)]
        elif tokens is not None and not self._warned_inexact:
            self._warned_inexact = True
            _log.warning(
                "plugin %r: the request's tokens are estimated, not the model's: nothing can "
                "match the servers' KV events; configure token-producer with the model's "
                "tokenizer (parameters.local.path)",
                self.name,
            )
        salt = request.cache_salt
        target = request.target_model or request.model
        names = [e.key for e in endpoints]
        totals: dict[str, tuple[float, int, int]] = {}
        for prompt in prompts:
            keys_for = functools.partial(_keys_for, prompt, salt, {})
            for server, m in self.index.match(names, keys_for, target).items():
                weighted, total, _ = totals.get(server, (0.0, 0, m.block_size))
                totals[server] = (weighted + m.weighted, total + m.total, m.block_size)
        size = self.block_size
        unknown = PrefixMatch(0, sum(len(p) // size for p in prompts), size)
        cycle.put(
            self.key,
            {
                e.key: PrefixMatch(int(t[0]), t[1], t[2]) if (t := totals.get(e.key)) else unknown
                for e in endpoints
            },
        )

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None:
        matches = cycle.get(self.key) or {}
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
        if not self.params.speculative_indexing:
            return
        tokens = cycle.get(TOKENIZED_PROMPT)
        if tokens is None or not tokens.exact:
            return
        targets = [result.profiles[result.primary].targets[:1]]
        prefill = result.profiles.get(PREFILL_PROFILE)
        if prefill is not None and result.primary != PREFILL_PROFILE:
            targets.append(prefill.targets[:1])
        deadline = self._clock() + self.speculative_ttl_s
        target = request.target_model or request.model
        for (endpoint,) in (t for t in targets if t):
            size = self.index.block_size(endpoint.key) or self.block_size
            lora = target if target and target in self._loras(endpoint.key) else None
            handles: list[int] = []
            for prompt in tokens.prompts:
                if isinstance(prompt, list):
                    keys = chain_keys(prompt, chain_root(lora, request.cache_salt), size)
                    handles += self.index.speculate(endpoint.key, keys, size)
            if handles:
                self._speculated.append((deadline, endpoint.key, handles))

    def _loras(self, server: str) -> frozenset[str]:
        return self.index.loras(server)

    def _expire(self) -> None:
        now = self._clock()
        queue = self._speculated
        while queue and queue[0][0] <= now:
            _, server, handles = queue.popleft()
            self.index.unspeculate(server, handles)

    # ------------------------------------------------------------------ state

    def statistics(self) -> Mapping[str, object]:
        stats = self.index.statistics()
        servers = stats.pop("servers")
        assert isinstance(servers, dict)
        busiest = sorted(servers.items(), key=lambda kv: (-kv[1]["blocks"], kv[0]))
        return {
            "pods": [
                {"pod": name, "blocks": info["blocks"], "blockSize": info["blockSize"]}
                for name, info in busiest[:_MAX_STATISTICS_SERVERS]
            ],
            "totalPods": len(servers),
            "maxPods": _MAX_STATISTICS_SERVERS,
            **stats,
            "batches": self.batches,
            "speculative": sum(len(h) for _, _, h in self._speculated),
            "requests": self.requests,
            "hitRatio": self.hit_blocks / self.total_blocks if self.total_blocks else 0.0,
        }
