"""The request lifecycle: parse, find candidates, schedule, account, settle.

``route`` turns a complete request into a routing decision (or raises a RouterError that becomes
an immediate response). It counts the request in flight on the chosen endpoint. ``settle``
releases it when the exchange ends, however it ends: response complete, client gone, stream
broken. A record settles exactly once, so in-flight counts never drift.

Order, as llm-d's director: request id → parse (model, rewrite) → candidates (pool ∩ the proxy's
subset hint; none → 503) → schedule (nothing left → 429) → account. Requests without a body
(``GET /v1/models``) skip parsing and scheduling and go to a random endpoint of the pool.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmd_router.errors import ResourceExhausted, RouterError, ServiceUnavailable
from llmd_router.headers import CONTENT_LENGTH, DESTINATION_SUBSET, REQUEST_ID, SUBSET_NAMESPACE
from llmd_router.parsing import InferenceRequest, parse_request, request_path
from llmd_router.requestcontrol.exchange import Decision, Outcome
from llmd_router.scheduling.framework import SchedulingError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmd_router.datalayer.endpoints import Endpoint, EndpointStore
    from llmd_router.observability.metrics import RouterMetrics
    from llmd_router.scheduling.framework import Scheduler
    from llmd_router.types import Metadata

__all__ = ["Director", "RequestRecord", "subset_hint"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestRecord:
    """What must be settled when a routed request ends."""

    request_id: str
    received_at: float
    endpoint: Endpoint
    model: tuple[str, str]
    settled: bool = False


def subset_hint(metadata: Metadata) -> list[str] | None:
    """The proxy's candidate subset: a list (or comma-separated string) of ``ip[:port]``;
    None when the proxy gave none."""
    namespace = metadata.get(SUBSET_NAMESPACE)
    if namespace is None or DESTINATION_SUBSET not in namespace:
        return None
    value = namespace[DESTINATION_SUBSET]
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.extend(p for p in (s.strip() for s in item.split(",")) if p)
    return out


class Director:
    def __init__(
        self,
        store: EndpointStore,
        scheduler: Scheduler,
        metrics: RouterMetrics,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        honour_subset_hint: bool = True,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.metrics = metrics
        self._rng = rng or random.Random()
        self._clock = clock
        self._honour_subset = honour_subset_hint

    def route(
        self,
        headers: Mapping[str, str],
        body: bytes,
        metadata: Metadata,
        *,
        has_body: bool,
        received_at: float,
    ) -> tuple[Decision, RequestRecord]:
        """Decide where a complete request goes. Raises RouterError (counted here)."""
        extra: list[tuple[str, str]] = []
        request_id = headers.get(REQUEST_ID)
        if not request_id:
            request_id = str(uuid.uuid4())
            extra.append((REQUEST_ID, request_id))
        path = request_path(headers)
        if not has_body:
            return self._route_anywhere(request_id, received_at, extra)
        request: InferenceRequest | None = None
        model = ("", "")
        try:
            request = parse_request(path, headers, body, request_id)
            model = self.metrics.models(request.model, request.target_model)
            endpoint, destination, scheduled = self._schedule(request, metadata, model)
        except RouterError as exc:
            self.metrics.failed(
                model,
                exc.code,
                request.fairness_id if request else "default-flow",
                request.priority if request else 0,
            )
            raise
        endpoint.inflight += 1
        self.metrics.routed(
            model,
            request.fairness_id,
            request.priority,
            request.size,
            scheduled,
            endpoint.name,
            endpoint.namespace,
            endpoint.port,
        )
        if request.body:
            extra.append((CONTENT_LENGTH, str(len(request.body))))
        decision = Decision(
            destination=destination,
            body=request.body,
            body_mutated=request.body_mutated,
            set_headers=tuple(extra),
            response_model=_response_model(request),
        )
        return decision, RequestRecord(request_id, received_at, endpoint, model)

    def _schedule(
        self, request: InferenceRequest, metadata: Metadata, model: tuple[str, str]
    ) -> tuple[Endpoint, str, float]:
        subset = subset_hint(metadata) if self._honour_subset else None
        candidates = self.store.candidates(subset)
        if not candidates:
            raise ServiceUnavailable(
                "failed to find endpoint candidates for serving the request",
                dropped_reason="rejected-no-endpoints",
            )
        started = self._clock()
        try:
            result = self.scheduler.schedule(request, candidates)
        except SchedulingError as exc:
            self.metrics.scheduling_failed(model[1])
            raise ResourceExhausted(
                f"failed to find target endpoint: {exc}", dropped_reason="rejected-saturated"
            ) from None
        targets = result.targets
        return targets[0], ",".join(t.key for t in targets), self._clock() - started

    def _route_anywhere(
        self, request_id: str, received_at: float, extra: list[tuple[str, str]]
    ) -> tuple[Decision, RequestRecord]:
        """A request without a body: any endpoint of the pool (the subset hint is ignored, as
        in llm-d), chosen at random."""
        endpoints = self.store.all()
        model = self.metrics.models(None, None)
        if not endpoints:
            self.metrics.failed(model, "ServiceUnavailable", "default-flow", 0)
            raise ServiceUnavailable(
                "no endpoints available in the pool", dropped_reason="rejected-no-endpoints"
            )
        endpoint = self._rng.choice(endpoints)
        endpoint.inflight += 1
        self.metrics.routed(
            model, "default-flow", 0, 0, None, endpoint.name, endpoint.namespace, endpoint.port
        )
        decision = Decision(destination=endpoint.key, body=b"", set_headers=tuple(extra))
        return decision, RequestRecord(request_id, received_at, endpoint, model)

    def internal_error(self) -> None:
        """A bug surfaced while routing: count it (the stream answers 500)."""
        self.metrics.failed(("", ""), "Internal", "default-flow", 0)

    def settle(self, record: RequestRecord, outcome: Outcome) -> None:
        """The exchange of a routed request ended. Idempotent."""
        if record.settled:
            return
        record.settled = True
        record.endpoint.inflight -= 1
        usage = outcome.usage
        self.metrics.finished(
            record.model,
            self._clock() - record.received_at,
            outcome.response_bytes,
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
            usage.cached_tokens if usage else None,
        )
        status = outcome.response_status
        if status is not None and not 200 <= status < 300:
            self.metrics.failed(record.model, "ModelServerError", "default-flow", 0)


def _response_model(request: InferenceRequest) -> tuple[str, str] | None:
    if request.model and request.target_model and request.target_model != request.model:
        return request.target_model, request.model
    return None
