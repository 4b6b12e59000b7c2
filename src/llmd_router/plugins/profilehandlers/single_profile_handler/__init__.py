"""``single-profile-handler``: run the one scheduling profile; it routes the request.

``pick_profiles`` returns every profile until each has run once. ``process_results`` needs
exactly one result: more is a configuration mistake, and a profile that found no endpoint fails
the request. The loader adds this handler when a configuration has one profile and no handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmd_router.framework import (
    NoParams,
    Plugin,
    SchedulingError,
    SchedulingResult,
    Stability,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.framework import CycleState, ProfileResult
    from llmd_router.framework.interfaces import Profile
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["SingleProfileHandler"]


class SingleProfileHandler(Plugin[NoParams]):
    """Runs the configuration's single profile, which is the primary one."""

    TYPE: ClassVar[str] = "single-profile-handler"
    STABILITY: ClassVar[Stability] = Stability.BETA

    def pick_profiles(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        profiles: Mapping[str, Profile],
        results: Mapping[str, ProfileResult | None],
    ) -> Sequence[str]:
        if len(results) == len(profiles):  # everything ran in the previous round
            return ()
        return tuple(profiles)

    def process_results(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        results: Mapping[str, ProfileResult | None],
    ) -> SchedulingResult:
        if len(results) != 1:
            raise SchedulingError(
                "single profile handler is intended to be used with a single profile, "
                "failed to process multiple profiles"
            )
        ((name, result),) = results.items()
        if result is None:
            raise SchedulingError(f"failed to run scheduler profile '{name}'")
        return SchedulingResult(name, {name: result})
