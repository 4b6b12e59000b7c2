"""Values to test plugins with: endpoints, requests, scheduling results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmd_router.datalayer.endpoints import NO_METRICS, Endpoint, EndpointMetrics
from llmd_router.framework.interfaces import ProfileResult, SchedulingResult
from llmd_router.parsing.openai import api_kind
from llmd_router.parsing.request import ApiKind, InferenceRequest

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["endpoint", "endpoints", "request", "result"]


def endpoint(
    i: int = 0,
    *,
    name: str | None = None,
    address: str | None = None,
    port: int = 8000,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    models: tuple[str, ...] | None = None,
    reported_at: float | None = None,
    **metrics: Any,
) -> Endpoint:
    """Endpoint ``e{i}`` at ``10.0.0.{i}:{port}``. Keyword ``metrics`` are the fields of its last
    report (``waiting_queue_size=3``, ``kv_cache_usage=0.5``, ...), made at ``reported_at``: 1.0
    when metrics are given, never (0.0) otherwise."""
    if metrics or reported_at is not None:
        at = reported_at if reported_at is not None else 1.0
        report = EndpointMetrics(**{**metrics, "updated_at": at})
    else:
        report = NO_METRICS
    return Endpoint(
        name if name is not None else f"e{i}",
        address if address is not None else f"10.0.0.{i}",
        port,
        namespace=namespace,
        labels=dict(labels or {}),
        metrics=report,
        models=models,
    )


def endpoints(n: int, **metrics: Sequence[Any]) -> list[Endpoint]:
    """``n`` endpoints, ``e0`` to ``e{n-1}``; each keyword gives one value per endpoint
    (``endpoints(3, waiting_queue_size=[0, 5, 10])``)."""
    for field, values in metrics.items():
        if len(values) != n:
            raise ValueError(f"{field}: {len(values)} values for {n} endpoints")
    return [endpoint(i, **{f: v[i] for f, v in metrics.items()}) for i in range(n)]


def request(
    *,
    path: str = "/v1/completions",
    size: int | None = None,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    kind: ApiKind | None = None,
    model: str | None = None,
    target_model: str | None = None,
    prompt: Any = None,
    messages: list[Any] | None = None,
    max_tokens: int | None = None,
    stream: bool = False,
    priority: int = 0,
    objective: str | None = None,
    fairness_id: str = "default-flow",
    request_id: str = "r",
) -> InferenceRequest:
    """A parsed request, as a parser would have made it (nothing is parsed here). ``size``
    gives a body of that many bytes; the API kind follows ``path`` unless given."""
    return InferenceRequest(
        request_id=request_id,
        path=path,
        kind=kind if kind is not None else api_kind(path),
        headers=dict(headers or {}),
        body=b"x" * size if size is not None else body,
        model=model,
        target_model=target_model if target_model is not None else model,
        stream=stream,
        max_tokens=max_tokens,
        messages=messages,
        prompt=prompt,
        fairness_id=fairness_id,
        objective=objective,
        priority=priority,
    )


def result(**profiles: Sequence[Endpoint]) -> SchedulingResult:
    """A scheduling result: each profile's targets, best first; the first profile is the
    primary one (``result(decode=[a], prefill=[b])``)."""
    if not profiles:
        raise ValueError("a result needs at least one profile")
    primary = next(iter(profiles))
    return SchedulingResult(primary, {n: ProfileResult(tuple(t)) for n, t in profiles.items()})
