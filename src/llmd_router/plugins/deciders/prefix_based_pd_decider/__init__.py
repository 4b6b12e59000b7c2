"""``prefix-based-pd-decider``: prefill apart when the decode endpoint lacks enough of the prompt.

Rules, in order (any "no" means decode-only):

1. ``nonCachedTokens == 0``: no (the decider is off).
2. ``tokens`` = the prompt's length in tokens; ``promptTokens > 0`` and ``tokens < promptTokens``:
   no.
3. ``tokens < nonCachedTokens``: no.
4. No ``PREFIX_MATCH`` entry for the decode endpoint: no.
5. Yes iff ``tokens - match_blocks * block_size_tokens >= nonCachedTokens``.

``tokens`` is the token producer's count (``TOKENIZED_PROMPT``), as llm-d's: by default an
estimate that packs 4 bytes into a token (``llmd_router.parsing.prompt``) of a chat request's
tools, roles and text (one placeholder token per media item), a completion's prompt text (one
count per string), token ids as given, and the JSON of other inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import (
    PREFIX_MATCH,
    TOKENIZED_PROMPT,
    DataKey,
    Params,
    Plugin,
    Stability,
)
from llmd_router.parsing.prompt import estimate

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


def prompt_tokens(request: InferenceRequest, cycle: CycleState | None = None) -> int:
    """The prompt's length in tokens: the token producer's count, else the estimate (0 when
    there is no prompt to measure)."""
    tokens = cycle.get(TOKENIZED_PROMPT) if cycle is not None else None
    return (tokens or estimate(request)).token_count


class PrefixBasedPDDecider(Plugin[PrefixBasedPDDeciderParams]):
    """Approves a separate prefill when the decode endpoint's uncached suffix is long enough."""

    TYPE: ClassVar[str] = "prefix-based-pd-decider"
    Params: ClassVar[type[Any]] = PrefixBasedPDDeciderParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (PREFIX_MATCH, TOKENIZED_PROMPT)

    def decide(
        self, cycle: CycleState, request: InferenceRequest, primary: Endpoint | None
    ) -> bool:
        threshold = self.params.non_cached_tokens
        if threshold == 0 or primary is None:
            return False
        tokens = prompt_tokens(request, cycle)
        minimum = self.params.prompt_tokens
        if (minimum > 0 and tokens < minimum) or tokens < threshold:
            return False
        match = (cycle.get(PREFIX_MATCH) or {}).get(primary.key)
        if match is None:
            return False
        return tokens - match.match_blocks * match.block_size_tokens >= threshold
