"""The plugin contracts: what a filter, scorer, picker, profile handler and request hook is.

A plugin is an object with a ``name`` (unique in a configuration) and one or more of the methods
below; the kinds it implements decide where it is wired (one object may be a filter and a scorer,
or a producer and a pre-request hook). Everything here is synchronous and pure over what it is
given: no awaits, no I/O. What a plugin reads is in memory when it is called.

Scores are aligned with the endpoints they score: ``score(..., endpoints)[i]`` is the score of
``endpoints[i]``. The profile clamps each to [0, 1] and adds them up with their weights.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llmd_router.parsing.select import Parser

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework.cycle import CycleState
    from llmd_router.parsing.request import InferenceRequest
    from llmd_router.parsing.usage import Usage

__all__ = [
    "Admitter",
    "AsyncDataProducer",
    "Category",
    "Completion",
    "DataProducer",
    "Decider",
    "Filter",
    "Parser",
    "Picker",
    "PreRequest",
    "Profile",
    "ProfileHandler",
    "ProfileResult",
    "ProfileTrace",
    "ResponseComplete",
    "SaturationDetector",
    "SchedulingError",
    "SchedulingResult",
    "Scorer",
]


class SchedulingError(Exception):
    """No endpoint can serve the request (every candidate was filtered out, or no profile ran)."""


class Category(enum.Enum):
    """What a scorer optimises for (informational, as in llm-d)."""

    AFFINITY = "Affinity"
    DISTRIBUTION = "Distribution"
    BALANCE = "Balance"


@dataclass(frozen=True, slots=True)
class ProfileTrace:
    """How a profile reached its choice, kept by reference (no copies): the endpoints left after
    the filters, each scorer's clamped scores aligned with them, and the weighted totals."""

    endpoints: Sequence[Endpoint]
    scorers: tuple[tuple[str, float, Sequence[float]], ...]  # (name, weight, clamped scores)
    totals: Sequence[float]
    filtered_by: str | None = None  # the filter that left nothing, when one did


@dataclass(frozen=True, slots=True)
class ProfileResult:
    targets: tuple[Endpoint, ...]  # primary first, then ordered fallbacks
    trace: ProfileTrace | None = None


@dataclass(frozen=True, slots=True)
class SchedulingResult:
    """Per profile, where the request goes. The primary profile's targets route it; the others
    (a prefill profile, for one) are there for the hooks that run after scheduling."""

    primary: str
    profiles: Mapping[str, ProfileResult]

    @property
    def targets(self) -> tuple[Endpoint, ...]:
        return self.profiles[self.primary].targets


@dataclass(frozen=True, slots=True)
class Completion:
    """How a routed request ended, as far as the router knows."""

    status: int | None = None  # None: no response reached the client
    usage: Usage | None = None
    response_bytes: int = 0
    duration_s: float = 0.0
    extra: Mapping[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------- scheduling


@runtime_checkable
class Filter(Protocol):
    name: str

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        """The endpoints to keep, a subset of ``endpoints``."""
        ...


@runtime_checkable
class Scorer(Protocol):
    name: str

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        """One score in [0, 1] per endpoint, in the same order (values outside are clamped)."""
        ...


@runtime_checkable
class Picker(Protocol):
    name: str

    def pick(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        endpoints: Sequence[Endpoint],
        scores: Sequence[float],
    ) -> tuple[Endpoint, ...]:
        """The chosen endpoints (at least one, all from ``endpoints``), best first."""
        ...


class Profile(Protocol):
    """What a profile handler sees of a profile."""

    @property
    def name(self) -> str: ...


@runtime_checkable
class ProfileHandler(Protocol):
    name: str

    def pick_profiles(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        profiles: Mapping[str, Profile],
        results: Mapping[str, ProfileResult | None],
    ) -> Sequence[str]:
        """The profiles to run next (none: scheduling is over). A profile that ran is in
        ``results``, with None when it found no endpoint."""
        ...

    def process_results(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        results: Mapping[str, ProfileResult | None],
    ) -> SchedulingResult:
        """Combine the profiles' results. Raises SchedulingError when they cannot route."""
        ...


@runtime_checkable
class Decider(Protocol):
    """Whether a disaggregated stage (prefill, encode) should run for a request."""

    name: str

    def decide(
        self, cycle: CycleState, request: InferenceRequest, primary: Endpoint | None
    ) -> bool:
        """``primary`` is the endpoint the primary stage chose; None when the stage is decided
        before any endpoint is chosen (prefill first)."""
        ...


# ---------------------------------------------------------------------------- request control


@runtime_checkable
class DataProducer(Protocol):
    """Computes per-request data (``cycle``) that filters and scorers read."""

    name: str

    def produce(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None: ...


@runtime_checkable
class AsyncDataProducer(Protocol):
    """A data producer that must wait for something (a batching window, a tokenizer service)
    before it can write its data. The director awaits it, in its place among the producers,
    for at most ``produce_timeout_s``; past that, or on an error, the request is scheduled
    without its data."""

    name: str
    produce_timeout_s: float

    async def produce_async(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None: ...


@runtime_checkable
class Admitter(Protocol):
    name: str

    def admit(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> str | None:
        """None to admit; otherwise why the request is refused."""
        ...


@runtime_checkable
class PreRequest(Protocol):
    """Runs once the request is scheduled, before it is forwarded. What it decides goes in
    ``cycle.outputs``: headers set on or removed from the forwarded request, headers for the
    client's response, and in-flight charges."""

    name: str

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None: ...


@runtime_checkable
class ResponseComplete(Protocol):
    """Runs once when a routed request ends, however it ends."""

    name: str

    def response_complete(
        self, request: InferenceRequest, result: SchedulingResult, completion: Completion
    ) -> None: ...


@runtime_checkable
class SaturationDetector(Protocol):
    name: str

    def saturation(self, endpoints: Sequence[Endpoint]) -> float:
        """How full the endpoints are: 1.0 or more means saturated."""
        ...
