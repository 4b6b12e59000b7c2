"""The request lifecycle between the ext-proc protocol and the scheduler."""

from llmd_router.requestcontrol.director import Director, RequestRecord, subset_hint
from llmd_router.requestcontrol.exchange import Decision, Outcome

__all__ = ["Decision", "Director", "Outcome", "RequestRecord", "subset_hint"]
