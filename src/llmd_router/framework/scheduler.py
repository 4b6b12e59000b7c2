"""Running profiles: filters, then weighted scorers, then a picker; a handler chooses profiles.

One profile run, as llm-d's::

    endpoints = candidates
    for each filter (in configuration order): endpoints = filter(endpoints); stop if empty
    total[e] = sum over scorers of clamp(score(e), 0, 1) * weight      # not normalised
    targets = picker(endpoints, total)

The profile handler decides which profiles run, in rounds, until it asks for none; then it
combines their results (the primary profile's targets route the request). A profile that finds
no endpoint records None; the handler decides whether that fails the request.

Every plugin call is timed into an observer bound when the scheduler is built (the
``plugin_duration_seconds`` histogram), so the hot loop does no label lookups. Each profile
result keeps a trace (its scorers' score lists and the totals, by reference) for explanations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Protocol

from llmd_router.framework.interfaces import (
    Filter,
    Picker,
    ProfileHandler,
    ProfileResult,
    ProfileTrace,
    SchedulingError,
    SchedulingResult,
    Scorer,
)

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework.cycle import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["Observe", "PluginScheduler", "PluginTimer", "SchedulerProfile", "null_timer"]

Observe = Callable[[float], None]


class PluginTimer(Protocol):
    def __call__(self, extension_point: str, plugin_type: str, plugin_name: str) -> Observe:
        """An observer of one plugin's call durations (seconds) at one extension point."""
        ...


def _ignore(_seconds: float) -> None:
    return None


def null_timer(extension_point: str, plugin_type: str, plugin_name: str) -> Observe:
    return _ignore


@dataclass(frozen=True, slots=True)
class SchedulerProfile:
    name: str
    filters: tuple[tuple[Filter, Observe], ...]
    scorers: tuple[tuple[Scorer, float, Observe], ...]
    picker: tuple[Picker, Observe]

    def run(
        self, cycle: CycleState, request: InferenceRequest, candidates: Sequence[Endpoint]
    ) -> ProfileResult | None:
        endpoints = candidates
        for plugin, observe in self.filters:
            started = perf_counter()
            endpoints = plugin.filter(cycle, request, endpoints)
            observe(perf_counter() - started)
            if not endpoints:
                return ProfileResult((), ProfileTrace((), (), (), filtered_by=plugin.name))
        totals = [0.0] * len(endpoints)
        traced: list[tuple[str, float, Sequence[float]]] = []
        for scorer, weight, observe in self.scorers:
            started = perf_counter()
            raw = scorer.score(cycle, request, endpoints)
            observe(perf_counter() - started)
            if len(raw) != len(endpoints):
                raise SchedulingError(
                    f"scorer {scorer.name!r} returned {len(raw)} scores for "
                    f"{len(endpoints)} endpoints"
                )
            # NaN fails both comparisons' positive branch and counts as 0.
            clamped = [s if 0.0 < s <= 1.0 else 1.0 if s > 1.0 else 0.0 for s in raw]
            traced.append((scorer.name, weight, clamped))
            totals = [t + s * weight for t, s in zip(totals, clamped, strict=True)]
        picker, observe = self.picker
        started = perf_counter()
        targets = picker.pick(cycle, request, endpoints, totals)
        observe(perf_counter() - started)
        return ProfileResult(tuple(targets), ProfileTrace(endpoints, tuple(traced), totals))


class PluginScheduler:
    """Schedules a request over its candidates with the configured profiles and handler."""

    def __init__(
        self,
        handler: ProfileHandler,
        profiles: Mapping[str, SchedulerProfile],
        *,
        timer: PluginTimer = null_timer,
        handler_type: str = "",
    ) -> None:
        self.handler = handler
        self.profiles = dict(profiles)
        kind = handler_type or type(handler).__name__
        self._observe_pick = timer("ProfilePicker", kind, handler.name)
        self._observe_process = timer("ProcessProfilesResults", kind, handler.name)

    def schedule(
        self, cycle: CycleState, request: InferenceRequest, candidates: Sequence[Endpoint]
    ) -> SchedulingResult:
        """Raises SchedulingError when no profile can route the request."""
        results: dict[str, ProfileResult | None] = {}
        # A handler names profiles round by round; a profile runs at most once per request,
        # so a handler that keeps naming profiles cannot loop for ever.
        for _ in range(len(self.profiles) + 1):
            started = perf_counter()
            names = self.handler.pick_profiles(cycle, request, self.profiles, results)
            self._observe_pick(perf_counter() - started)
            fresh = [n for n in names if n not in results]
            if not fresh:
                break
            for name in fresh:
                profile = self.profiles.get(name)
                if profile is None:
                    raise SchedulingError(f"profile handler named unknown profile {name!r}")
                result = profile.run(cycle, request, candidates)
                results[name] = result if result is not None and result.targets else None
                if result is not None and not result.targets and result.trace is not None:
                    cycle.empty_profiles[name] = result.trace.filtered_by
        if not results:
            raise SchedulingError(
                f"failed to run any scheduler profile for request {request.request_id}"
            )
        started = perf_counter()
        outcome = self.handler.process_results(cycle, request, results)
        self._observe_process(perf_counter() - started)
        return outcome
