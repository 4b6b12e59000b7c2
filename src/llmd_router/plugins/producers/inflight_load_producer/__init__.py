"""``inflight-load-producer``: work this router has sent to each endpoint and not yet seen end.

Theory of operation. The counts are the router's in-flight ledger (``llmd_router.datalayer
.inflight``), which the endpoint store owns and every routed request is charged to: one request
on the chosen endpoint, charged by the director for every request. This producer adds what only
it knows:

- ``produce`` copies the ledger's counts for the candidates into the cycle (``INFLIGHT_LOAD``),
  and writes, per candidate, the tokens this request would cost it (``UNCACHED_TOKENS``): its
  prompt less the prefix the candidate is believed to hold, plus the output estimate when
  enabled. ``token-load-scorer`` adds them to the endpoint's load; the affinity filter's TTFT
  estimate reads the load.
- ``pre_request`` charges, to the first target of every profile in the result, the tokens the
  request is expected to cost that endpoint, and one request to the target of every profile but
  the primary one (the director charged that). An endpoint chosen by two profiles is counted
  twice, as llm-d counts it (its entries are per endpoint and profile).
- Release (llm-d's timing). Without the output estimate, the tokens are the prompt's, computed
  by the time the response's first chunk comes: they are charged until then; so is the request
  on the target of the ``prefill`` profile, which has handed off by then. With the output
  estimate, only the ``prefill`` target's charge ends at the first chunk. Everything else ends
  with the request. Where the response does not pass through the router (the access-log
  completion source), the first chunk is not seen and all of it ends with the request. The
  router refunds exactly what was charged, once, however the request ends.

Token estimate (llm-d ``SimpleTokenEstimator`` and ``estimateRequestTokens``):

    input    = the token producer's count (TOKENIZED_PROMPT; by default 4 bytes of the
               rendered prompt to a token)
    indexed  = total_blocks * block_size
    uncached = (total_blocks - match_blocks) * block_size + max(input - indexed, 0)
               when the cycle has a PrefixMatch for the endpoint (block_size > 0), else input
    output   = min(round(input * outputRatio), max_tokens, maxEstimatedOutputTokens)
               when addEstimatedOutputTokens, else 0
    tokens   = uncached + output
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Final

from llmd_router.datalayer.inflight import InFlightLedger
from llmd_router.framework import (
    INFLIGHT_LOAD,
    TOKENIZED_PROMPT,
    UNCACHED_TOKENS,
    Params,
    Plugin,
    Stability,
    prefix_match_key,
)
from llmd_router.parsing.prompt import estimate

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.inflight import InFlightView
    from llmd_router.framework import (
        CycleState,
        DataKey,
        PluginHandle,
        PrefixMatch,
        SchedulingResult,
    )
    from llmd_router.parsing.request import InferenceRequest

__all__ = [
    "PREFILL_PROFILE",
    "InFlightLoadProducer",
    "InFlightLoadProducerParams",
    "input_tokens",
    "uncached_input_tokens",
]

PREFILL_PROFILE: Final = "prefill"  # llm-d releases the target of the profile named so early


class InFlightLoadProducerParams(Params, frozen=True):
    add_estimated_output_tokens: bool = False
    output_ratio: float = 1.5
    max_estimated_output_tokens: int | None = None
    # Whose prefix matches discount the cached part of the prompt (empty: the default producer).
    prefix_match_info_producer_name: str = ""
    # Accepted for llm-d configurations; there is no other replica to share counters with.
    sync_cross_replica_state: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.output_ratio) and self.output_ratio >= 0):
            raise ValueError(f"outputRatio must be non-negative, got {self.output_ratio}")
        if self.max_estimated_output_tokens is not None and self.max_estimated_output_tokens < 0:
            raise ValueError(
                "maxEstimatedOutputTokens must be non-negative, "
                f"got {self.max_estimated_output_tokens}"
            )


def input_tokens(cycle: CycleState, request: InferenceRequest) -> int:
    """The prompt's tokens: the token producer's count, else the estimate."""
    tokens = cycle.get(TOKENIZED_PROMPT)
    return (tokens or estimate(request)).token_count


def uncached_input_tokens(match: PrefixMatch | None, input_tokens: int) -> int:
    """The prompt tokens an endpoint must compute, less the prefix it is believed to hold. The
    tail beyond the blocks the prefix index looked at is added back from ``input_tokens``."""
    if match is None or match.block_size_tokens <= 0:
        return max(input_tokens, 0)
    indexed = match.total_blocks * match.block_size_tokens
    uncached = max(indexed - match.match_blocks * match.block_size_tokens, 0)
    return uncached + max(input_tokens - indexed, 0)


class InFlightLoadProducer(Plugin[InFlightLoadProducerParams]):
    """Per-endpoint requests and estimated tokens in flight, counted by this router."""

    TYPE: ClassVar[str] = "inflight-load-producer"
    Params: ClassVar[type[Any]] = InFlightLoadProducerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    produces: ClassVar[tuple[DataKey[Any], ...]] = (INFLIGHT_LOAD, UNCACHED_TOKENS)
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (TOKENIZED_PROMPT,)

    def __init__(self, name: str, params: InFlightLoadProducerParams) -> None:
        super().__init__(name, params)
        self._ledger: InFlightView = InFlightLedger()  # the router's, once bound
        self._prefix = prefix_match_key(params.prefix_match_info_producer_name)
        # The prefix matches are used when present, not required: requiring them would make
        # the framework add a prefix producer to every configuration that counts load.
        self.reads: tuple[DataKey[Any], ...] = (self._prefix,)

    def bind(self, handle: PluginHandle) -> None:
        self._ledger = handle.inflight

    def produce(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None:
        load = self._ledger.load
        cycle.put(INFLIGHT_LOAD, {e.key: load(e.key) for e in endpoints})
        prompt = input_tokens(cycle, request)
        output = self._output_tokens(prompt, request.max_tokens)
        matches = cycle.get(self._prefix) or {}
        costs: dict[int, int] = {}  # by match: producers share one among many candidates
        uncached: dict[str, int] = {}
        for e in endpoints:
            match = matches.get(e.key)
            cost = costs.get(id(match))
            if cost is None:
                cost = costs[id(match)] = uncached_input_tokens(match, prompt) + output
            uncached[e.key] = cost
        cycle.put(UNCACHED_TOKENS, uncached)

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None:
        prompt = input_tokens(cycle, request)
        output = self._output_tokens(prompt, request.max_tokens)
        prompt_only = not self.params.add_estimated_output_tokens
        matches = cycle.get(self._prefix) or {}
        charge = cycle.outputs.charge
        for name, profile in result.profiles.items():
            if not profile.targets:
                continue
            key = profile.targets[0].key
            tokens = uncached_input_tokens(matches.get(key), prompt) + output
            requests = int(name != result.primary)
            handed_off = name == PREFILL_PROFILE and requests == 1
            if prompt_only and not handed_off:
                # The prompt's tokens until the first chunk, the request until the end.
                charge(key, tokens=tokens, until_first_chunk=True)
                if requests:
                    charge(key, requests=requests)
            else:
                charge(key, requests=requests, tokens=tokens, until_first_chunk=handed_off)

    def statistics(self) -> Mapping[str, object]:
        """The busiest endpoints of the ledger, in the shape of llm-d's dump of this plugin."""
        return self._ledger.statistics()

    def _output_tokens(self, input_tokens: int, max_tokens: int | None) -> int:
        params = self.params
        if not params.add_estimated_output_tokens or input_tokens <= 0:
            return 0
        estimate = math.floor(input_tokens * params.output_ratio + 0.5)  # Go's math.Round
        if max_tokens is not None and 0 <= max_tokens < estimate:
            estimate = max_tokens
        cap = params.max_estimated_output_tokens
        if cap is not None and cap < estimate:
            estimate = cap
        return estimate
