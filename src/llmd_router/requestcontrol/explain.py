"""Explanations of routing decisions: what each scorer thought of each candidate.

When explanations are on, every decision is kept in a bounded log (the last N) by reference:
the profile traces already hold the endpoints, each scorer's clamped scores and the totals, so
keeping a decision costs a few object references (the producers' per-candidate data too: prefix
matches, loads) and rendering happens only when someone asks
(``GET /debug/decisions``, or a request with ``x-llmd-debug: 1``, which gets the explanation of
its own decision in the ``x-llmd-decision`` response header, limited to the best candidates so
that the header stays small).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec

from llmd_router.framework import InFlightLoad, PrefixMatch

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmd_router.framework import ProfileResult, SchedulingResult

__all__ = ["DecisionLog", "DecisionRecord", "render_result"]

HEADER_CANDIDATES: Final = 10  # candidates per profile in the response header


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    at: float  # wall-clock time
    request_id: str
    model: str | None
    target_model: str | None
    candidates: int
    result: SchedulingResult | None
    empty_profiles: Mapping[str, str | None]
    error: str | None = None  # why the request was refused, when it was
    # The producers' per-candidate data shown with the scores (prefix matches, load), by key.
    data: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


def _data(value: object) -> object:
    """Per-candidate data as JSON: a prefix match as ``[matched, total]`` blocks, an in-flight
    load as ``[requests, tokens]``, numbers as they are."""
    if isinstance(value, PrefixMatch):
        return [value.match_blocks, value.total_blocks]
    if isinstance(value, InFlightLoad):
        return [value.requests, value.tokens]
    return msgspec.to_builtins(value)


def _profile(
    result: ProfileResult, limit: int | None, data: Mapping[str, Mapping[str, object]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"targets": [t.key for t in result.targets]}
    trace = result.trace
    if trace is None:
        return out
    order = sorted(range(len(trace.endpoints)), key=lambda i: -trace.totals[i])
    if limit is not None:
        order = order[:limit]
    candidates = []
    for i in order:
        scores = {name: [round(s[i], 6), round(s[i] * w, 6)] for name, w, s in trace.scorers}
        key = trace.endpoints[i].key
        candidate: dict[str, Any] = {
            "endpoint": key,
            "name": trace.endpoints[i].name,
            "total": round(trace.totals[i], 6),
            "scores": scores,
        }
        seen = {name: _data(values[key]) for name, values in data.items() if key in values}
        if seen:
            candidate["data"] = seen
        candidates.append(candidate)
    out["candidates"] = candidates
    if limit is not None and len(trace.endpoints) > limit:
        out["omitted"] = len(trace.endpoints) - limit
    return out


def render_result(
    result: SchedulingResult | None,
    empty_profiles: Mapping[str, str | None],
    limit: int | None = None,
    data: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, Any]:
    """A decision as JSON-able data: per profile, its targets and every candidate's scores as
    ``{scorer: [raw, weighted]}``, best first, with the producers' data on it as
    ``{key: value}`` (``PrefixCacheMatchInfoDataKey/<producer>: [matched, total]`` blocks,
    ``InFlightLoadKey: [requests, tokens]``, ``UncachedRequestTokensDataKey: tokens``)."""
    out: dict[str, Any] = {}
    if result is not None:
        out["endpoint"] = result.targets[0].key if result.targets else None
        out["primaryProfile"] = result.primary
        out["profiles"] = {n: _profile(r, limit, data or {}) for n, r in result.profiles.items()}
    if empty_profiles:
        out["emptyProfiles"] = {name: {"filteredBy": by} for name, by in empty_profiles.items()}
    return out


def explanation_header(
    result: SchedulingResult,
    empty_profiles: Mapping[str, str | None],
    data: Mapping[str, Mapping[str, object]] | None = None,
) -> str:
    rendered = render_result(result, empty_profiles, HEADER_CANDIDATES, data)
    return msgspec.json.encode(rendered).decode()


class DecisionLog:
    """The last ``size`` decisions."""

    def __init__(self, size: int = 100) -> None:
        self._records: collections.deque[DecisionRecord] = collections.deque(maxlen=size)
        self.size = size

    def add(self, record: DecisionRecord) -> None:
        self._records.append(record)

    def __len__(self) -> int:
        return len(self._records)

    def render(self) -> list[dict[str, Any]]:
        """Newest first."""
        out = []
        for record in reversed(self._records):
            entry: dict[str, Any] = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.at))
                + f".{int(record.at * 1000) % 1000:03d}Z",
                "requestId": record.request_id,
                "model": record.model,
                "targetModel": record.target_model,
                "candidates": record.candidates,
            }
            if record.error is not None:
                entry["error"] = record.error
            entry.update(render_result(record.result, record.empty_profiles, data=record.data))
            out.append(entry)
        return out
