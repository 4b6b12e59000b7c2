"""The request lifecycle between the ext-proc protocol and the scheduler."""

from llmd_router.requestcontrol.director import (
    CompletionSource,
    Director,
    RequestRecord,
    subset_hint,
)
from llmd_router.requestcontrol.exchange import Decision, Ended, Outcome

__all__ = [
    "CompletionSource",
    "Decision",
    "Director",
    "Ended",
    "Outcome",
    "RequestRecord",
    "subset_hint",
]
