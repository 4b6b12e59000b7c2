"""``always-disagg-pd-decider``: run the prefill stage for every request.

For tests, and for deployments where every request should be prefilled apart from its decode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmd_router.framework import NoParams, Plugin, Stability

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["AlwaysDisaggPDDecider"]


class AlwaysDisaggPDDecider(Plugin[NoParams]):
    """Approves prefill/decode disaggregation unconditionally."""

    TYPE: ClassVar[str] = "always-disagg-pd-decider"
    STABILITY: ClassVar[Stability] = Stability.BETA

    def decide(
        self, cycle: CycleState, request: InferenceRequest, primary: Endpoint | None
    ) -> bool:
        return True
