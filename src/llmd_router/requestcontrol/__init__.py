"""The request lifecycle between the ext-proc protocol and the scheduler: routing (``director``)
and how a routed request ends (``settlement``)."""

from llmd_router.requestcontrol.director import Director, subset_hint
from llmd_router.requestcontrol.exchange import Decision, Ended, Outcome
from llmd_router.requestcontrol.settlement import CompletionSource, RequestRecord, Settlement

__all__ = [
    "CompletionSource",
    "Decision",
    "Director",
    "Ended",
    "Outcome",
    "RequestRecord",
    "Settlement",
    "subset_hint",
]
