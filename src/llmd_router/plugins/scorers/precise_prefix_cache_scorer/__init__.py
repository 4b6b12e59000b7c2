"""``precise-prefix-cache-scorer`` (deprecated in llm-d): ``precise-prefix-cache-producer`` and
``prefix-cache-scorer`` in one plugin, as llm-d still accepts it.

With another ``precise-prefix-cache-producer`` in the configuration, it is only a scorer of
that producer's matches (its own parameters are then ignored, as llm-d ignores them); with two,
the configuration is refused (it could not tell which). Otherwise it runs a producer of its own,
with its parameters (the producer's), and scores its matches. Either way the score is the
share of the request's blocks the endpoint holds, ``match_blocks / total_blocks``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.config import ConfigError
from llmd_router.datalayer.kvevents.subscriber import KVSubscription
from llmd_router.framework import (
    TOKENIZED_PROMPT,
    Category,
    DataKey,
    Plugin,
    Stability,
)
from llmd_router.plugins.producers.precise_prefix_cache_producer import (
    PrecisePrefixCacheProducer,
    PrecisePrefixCacheProducerParams,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.kvevents import KVEventBatch
    from llmd_router.framework import CycleState, PluginHandle, SchedulingResult
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["PrecisePrefixCacheScorer"]

_log = logging.getLogger(__name__)
_NOWHERE = KVSubscription(bind=None, pod_port=None)


class PrecisePrefixCacheScorer(Plugin[PrecisePrefixCacheProducerParams]):
    """``match_blocks / total_blocks`` from its own precise producer, or the configuration's."""

    TYPE: ClassVar[str] = "precise-prefix-cache-scorer"
    Params: ClassVar[type[Any]] = PrecisePrefixCacheProducerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.AFFINITY
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (TOKENIZED_PROMPT,)

    def __init__(self, name: str, params: PrecisePrefixCacheProducerParams) -> None:
        super().__init__(name, params)
        _log.warning(
            "plugin %r: precise-prefix-cache-scorer is deprecated; configure "
            "precise-prefix-cache-producer and prefix-cache-scorer "
            "(prefixMatchInfoProducerName: <the producer's name>) instead",
            name,
        )
        self.producer: PrecisePrefixCacheProducer | None = PrecisePrefixCacheProducer(name, params)
        self.key = self.producer.key
        self.produces: tuple[DataKey[Any], ...] = (self.key,)
        self.kv_subscription = self.producer.kv_subscription

    def bind(self, handle: PluginHandle) -> None:
        others = [
            (n, p) for n, p in handle.plugins.items() if isinstance(p, PrecisePrefixCacheProducer)
        ]
        if len(others) > 1:
            names = ", ".join(repr(n) for n, _ in others)
            raise ConfigError(
                f"plugin {self.name!r}: multiple precise-prefix-cache-producer instances are "
                f"configured ({names}); precise-prefix-cache-scorer cannot tell which to score. "
                "Use prefix-cache-scorer with prefixMatchInfoProducerName"
            )
        if others:
            _, producer = others[0]
            self.producer = None  # the configuration's producer does the work
            self.key = producer.key
            self.produces = ()
            self.consumes = (producer.key,)  # type: ignore[misc]
            self.kv_subscription = _NOWHERE
        elif self.producer is not None:
            self.producer.bind(handle)

    # ------------------------------------------------------------------ its own producer

    def produce(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None:
        if self.producer is not None:
            self.producer.produce(cycle, request, endpoints)

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None:
        if self.producer is not None:
            self.producer.pre_request(cycle, request, result)

    def kv_batch(self, server: str, model: str, batch: KVEventBatch) -> None:
        if self.producer is not None:
            self.producer.kv_batch(server, model, batch)

    def kv_reset(self, server: str, reason: str) -> None:
        if self.producer is not None:
            self.producer.kv_reset(server, reason)

    def statistics(self) -> Mapping[str, object]:
        if self.producer is None:
            return {"scores": self.key.name}
        return self.producer.statistics()

    # ------------------------------------------------------------------ the score

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        matches = cycle.get(self.key) or {}
        out = []
        for e in endpoints:
            m = matches.get(e.key)
            out.append(m.match_blocks / m.total_blocks if m is not None and m.total_blocks else 0.0)
        return out
