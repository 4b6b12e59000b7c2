"""``prefix-based-pd-decider``: prefill apart when the decode endpoint lacks enough of the prompt.

Rules, in order (any "no" means decode-only):

1. ``nonCachedTokens == 0``: no (the decider is off).
2. ``tokens`` = the prompt's length in tokens; ``promptTokens > 0`` and ``tokens < promptTokens``:
   no.
3. ``tokens < nonCachedTokens``: no.
4. No ``PREFIX_MATCH`` entry for the decode endpoint: no.
5. Yes iff ``tokens - match_blocks * block_size_tokens >= nonCachedTokens``.

llm-d counts the tokens of its token producer, by default an estimator that packs 4 bytes into a
token. This router estimates the same way from the same bytes (``llmd_router.parsing.prompt``):
a chat request's tools, roles and text (one placeholder token per media item), a completion's
prompt text (one count per string), token ids as given, and the JSON of other inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import PREFIX_MATCH, DataKey, Params, Plugin, Stability
from llmd_router.parsing.prompt import estimated_tokens

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["PrefixBasedPDDecider", "PrefixBasedPDDeciderParams", "prompt_tokens"]


class PrefixBasedPDDeciderParams(Params, frozen=True):
    non_cached_tokens: int = 0  # 0: never disaggregate
    prompt_tokens: int = 0  # 0: no minimum prompt length

    def __post_init__(self) -> None:
        if self.non_cached_tokens < 0:
            raise ValueError(f"nonCachedTokens: must be >= 0, got {self.non_cached_tokens}")
        if self.prompt_tokens < 0:
            raise ValueError(f"promptTokens: must be >= 0, got {self.prompt_tokens}")


def prompt_tokens(request: InferenceRequest) -> int:
    """The prompt's estimated length in tokens (0 when there is no prompt to measure)."""
    return estimated_tokens(request)


class PrefixBasedPDDecider(Plugin[PrefixBasedPDDeciderParams]):
    """Approves a separate prefill when the decode endpoint's uncached suffix is long enough."""

    TYPE: ClassVar[str] = "prefix-based-pd-decider"
    Params: ClassVar[type[Any]] = PrefixBasedPDDeciderParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (PREFIX_MATCH,)

    def decide(
        self, cycle: CycleState, request: InferenceRequest, primary: Endpoint | None
    ) -> bool:
        threshold = self.params.non_cached_tokens
        if threshold == 0 or primary is None:
            return False
        tokens = prompt_tokens(request)
        minimum = self.params.prompt_tokens
        if (minimum > 0 and tokens < minimum) or tokens < threshold:
            return False
        match = (cycle.get(PREFIX_MATCH) or {}).get(primary.key)
        if match is None:
            return False
        return tokens - match.match_blocks * match.block_size_tokens >= threshold
