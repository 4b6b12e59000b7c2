"""The scheduling contract: pure, synchronous, over the candidates of one request.

A scheduler returns, per profile, the endpoints a request goes to (primary first, then ordered
fallbacks). The primary profile's targets route the request; other profiles' results (a prefill
profile, for one) are there for the hooks that run after scheduling. Schedulers never await and
never do I/O: everything they read is in memory when they are called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ProfileResult", "Scheduler", "SchedulingError", "SchedulingResult"]


class SchedulingError(Exception):
    """No endpoint can serve the request (every candidate was filtered out)."""


@dataclass(frozen=True, slots=True)
class ProfileResult:
    targets: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class SchedulingResult:
    primary: str
    profiles: Mapping[str, ProfileResult]

    @property
    def targets(self) -> tuple[Endpoint, ...]:
        return self.profiles[self.primary].targets


class Scheduler(Protocol):
    def schedule(
        self, request: InferenceRequest, candidates: Sequence[Endpoint]
    ) -> SchedulingResult:
        """Choose endpoints among ``candidates`` (never empty). Raises SchedulingError."""
        ...
