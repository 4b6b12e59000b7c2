"""The request lifecycle: parse, find candidates, schedule, account.

``route`` turns a complete request into a routing decision (or raises a RouterError that becomes
an immediate response), and opens its record with ``settlement``, which charges it in flight
and settles it, exactly once, when the exchange ends (``requestcontrol.settlement``).

Order, as llm-d's director: request id → parser by path → parse (model, rewrite) → candidates
(pool ∩ the proxy's subset hint; none → 503) → admission (a sheddable request, priority < 0, is
refused with 429 when the saturation detector says the candidates are full) → data producers →
admitters (a refusal → 500, as llm-d) → scheduler (nothing left → 429) → pre-request hooks →
account. Requests without a body (``GET /v1/models``) skip all that and go to a random endpoint
of the pool. When a routed request settles, the response hooks of the configuration that routed
it run, even if the configuration has been reloaded since.

The configuration (``pipeline``) is read once per request, so a reload that swaps it never
mixes two configurations in one decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, cast

from llmd_router.datalayer.inflight import InFlightCharge
from llmd_router.errors import Internal, ResourceExhausted, RouterError, ServiceUnavailable
from llmd_router.framework import CycleState, SchedulingError
from llmd_router.headers import (
    CONTENT_LENGTH,
    DEBUG,
    DECISION,
    DESTINATION_SUBSET,
    EXCHANGE_ID,
    REQUEST_ID,
    SUBSET_NAMESPACE,
)
from llmd_router.parsing import request_path, rewrite_model
from llmd_router.parsing.request import ApiKind
from llmd_router.requestcontrol.exchange import Decision
from llmd_router.requestcontrol.explain import DecisionLog, DecisionRecord, explanation_header
from llmd_router.requestcontrol.objectives import ModelResources
from llmd_router.requestcontrol.settlement import CompletionSource, RequestRecord, Settlement

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.store import EndpointStore
    from llmd_router.framework import AsyncDataProducer, DataProducer, SchedulingResult
    from llmd_router.framework.scheduler import Observe
    from llmd_router.observability.metrics import RouterMetrics
    from llmd_router.parsing import InferenceRequest
    from llmd_router.pipeline import Pipeline
    from llmd_router.types import Metadata

__all__ = ["Director", "subset_hint"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Routing:
    """One request on its way to a decision: what each step leaves for the next."""

    pipeline: Pipeline
    cycle: CycleState
    request_id: str
    received_at: float
    metadata: Metadata
    extra: list[tuple[str, str]]  # headers the decision adds
    request: InferenceRequest | None = None
    model: tuple[str, str] = ("", "")  # the metrics' (model, target model) labels
    candidates: int = 0
    started: float = 0.0
    result: SchedulingResult | None = None
    seconds: float = 0.0  # scheduling time


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
    """Routes requests over ``store``'s endpoints with ``pipeline`` (replaced on reload). The
    pipeline's plugins must be bound to this store's ledger (``build_pipeline(...,
    inflight=store.inflight)``): the counts they read are the ones routing charges."""

    def __init__(
        self,
        store: EndpointStore,
        pipeline: Pipeline,
        metrics: RouterMetrics,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        honour_subset_hint: bool = True,
        completion_source: CompletionSource = "stream",
        max_pending_s: float = 3600.0,
        decisions: DecisionLog | None = None,
        resources: ModelResources | None = None,
    ) -> None:
        self.store = store
        # Objectives and model rewrites (from the configuration; replaced on reload).
        self.resources = resources if resources is not None else ModelResources()
        self.pipeline = pipeline
        self.metrics = metrics
        # Explanations are on when there is a log to keep them in.
        self.decisions = decisions
        self._rng = rng or random.Random()
        self._clock = clock
        self._honour_subset = honour_subset_hint
        # How routed requests end: their in-flight charges, metrics and response hooks.
        self.settlement = Settlement(
            store.inflight,
            metrics,
            clock=clock,
            completion_source=completion_source,
            max_pending_s=max_pending_s,
        )

    def route(
        self,
        headers: Mapping[str, str],
        body: bytes,
        metadata: Metadata,
        *,
        has_body: bool,
        received_at: float,
    ) -> tuple[Decision, RequestRecord]:
        """Decide where a complete request goes. Raises RouterError (counted here). For a
        configuration whose producers all answer at once; ``route_async`` serves every one."""
        if self.pipeline.awaiting:
            raise RuntimeError("this configuration has producers that wait: use route_async")
        routing = self._begin(headers, metadata, received_at)
        if not has_body:
            return self._route_anywhere(routing.request_id, received_at, routing.extra)
        with self._refusals(routing):
            candidates = self._prepare(routing, headers, body)
            for producer, observe in routing.pipeline.producers:
                self._produce(producer, observe, routing, candidates)
            self._decide(routing, candidates)
        return self._account(routing, headers)

    async def route_async(
        self,
        headers: Mapping[str, str],
        body: bytes,
        metadata: Metadata,
        *,
        has_body: bool,
        received_at: float,
    ) -> tuple[Decision, RequestRecord]:
        """``route``, awaiting the producers that wait (a batching window, a tokenizer service),
        each within its ``produce_timeout_s``."""
        routing = self._begin(headers, metadata, received_at)
        if not has_body:
            return self._route_anywhere(routing.request_id, received_at, routing.extra)
        with self._refusals(routing):
            candidates = self._prepare(routing, headers, body)
            awaiting = routing.pipeline.awaiting
            for producer, observe in routing.pipeline.producers:
                if producer.name in awaiting:
                    await self._produce_async(producer, observe, routing, candidates)
                else:
                    self._produce(producer, observe, routing, candidates)
            self._decide(routing, candidates)
        return self._account(routing, headers)

    def _begin(
        self, headers: Mapping[str, str], metadata: Metadata, received_at: float
    ) -> _Routing:
        extra: list[tuple[str, str]] = []
        request_id = headers.get(REQUEST_ID)
        if not request_id:
            request_id = str(uuid.uuid4())
            extra.append((REQUEST_ID, request_id))
        # The configuration is read once: a reload never mixes two in one decision.
        return _Routing(self.pipeline, CycleState(), request_id, received_at, metadata, extra)

    @contextlib.contextmanager
    def _refusals(self, routing: _Routing) -> Iterator[None]:
        """A refusal is counted and logged before it is raised."""
        try:
            yield
        except RouterError as exc:
            request = routing.request
            self.metrics.failed(
                routing.model,
                exc.code,
                request.fairness_id if request else "default-flow",
                request.priority if request else 0,
            )
            self._log_decision(
                routing.request_id, request, routing.candidates, None, routing.cycle, exc.message
            )
            raise

    def _prepare(
        self, routing: _Routing, headers: Mapping[str, str], body: bytes
    ) -> Sequence[Endpoint]:
        """Parse; the candidates (none: 503); admission (a sheddable request into a saturated
        pool: 429)."""
        pipeline = routing.pipeline
        request = routing.request = self._parse(pipeline, headers, body, routing.request_id)
        routing.model = self.metrics.models(request.model, request.target_model)
        routing.started = self._clock()
        subset = subset_hint(routing.metadata) if self._honour_subset else None
        candidates = self.store.candidates(subset, self._clock())
        routing.candidates = len(candidates)
        if not candidates:
            raise ServiceUnavailable(
                "failed to find endpoint candidates for serving the request",
                dropped_reason="rejected-no-endpoints",
            )
        if request.priority < 0 and pipeline.saturation.saturation(candidates) >= 1.0:
            raise ResourceExhausted(
                "system saturated, sheddable request dropped", dropped_reason="rejected-saturated"
            )
        return candidates

    def _produce(
        self,
        producer: DataProducer,
        observe: Observe,
        routing: _Routing,
        candidates: Sequence[Endpoint],
    ) -> None:
        started = perf_counter()
        try:
            assert routing.request is not None
            producer.produce(routing.cycle, routing.request, candidates)
        # As llm-d: a producer's failure is logged and the request goes on without it.
        except Exception:  # noqa: BLE001
            _log.exception("data producer %r failed; scheduling without it", producer.name)
        observe(perf_counter() - started)

    async def _produce_async(
        self,
        producer: DataProducer,
        observe: Observe,
        routing: _Routing,
        candidates: Sequence[Endpoint],
    ) -> None:
        started = perf_counter()
        waiting = cast("AsyncDataProducer", producer)
        try:
            assert routing.request is not None
            async with asyncio.timeout(waiting.produce_timeout_s):
                await waiting.produce_async(routing.cycle, routing.request, candidates)
        except TimeoutError:
            _log.warning(
                "data producer %r took more than %gs; scheduling without it",
                producer.name,
                waiting.produce_timeout_s,
            )
        except Exception:  # noqa: BLE001
            _log.exception("data producer %r failed; scheduling without it", producer.name)
        observe(perf_counter() - started)

    def _decide(self, routing: _Routing, candidates: Sequence[Endpoint]) -> None:
        """Admitters (a refusal: 500) → scheduler (nothing left: 429) → pre-request hooks."""
        pipeline, cycle, request = routing.pipeline, routing.cycle, routing.request
        assert request is not None
        for admitter, observe in pipeline.admitters:
            started = perf_counter()
            refusal = admitter.admit(cycle, request, candidates)
            observe(perf_counter() - started)
            if refusal is not None:
                raise Internal(f"request cannot be admitted: {refusal}")
        try:
            result = pipeline.scheduler.schedule(cycle, request, candidates)
        except SchedulingError as exc:
            self.metrics.scheduling_failed(request.target_model or "")
            raise ResourceExhausted(
                f"failed to find target endpoint: {exc}", dropped_reason="rejected-saturated"
            ) from None
        for hook, observe in pipeline.pre_request:
            started = perf_counter()
            try:
                hook.pre_request(cycle, request, result)
            except Exception:  # noqa: BLE001  a hook's bug must not lose the request
                _log.exception("pre-request hook %r failed", hook.name)
            observe(perf_counter() - started)
        routing.result = result
        routing.seconds = self._clock() - routing.started

    def _parse(
        self, pipeline: Pipeline, headers: Mapping[str, str], body: bytes, request_id: str
    ) -> InferenceRequest:
        """The parser that claims the path, timed; then objectives and rewrites."""
        path = request_path(headers)
        parser = pipeline.parsers.resolve(path)
        started = perf_counter()
        try:
            request = parser.parse(path, headers, body, request_id)
        finally:
            pipeline.parse_observers[parser.name](perf_counter() - started)
        return self._apply_resources(request)

    def _account(
        self, routing: _Routing, headers: Mapping[str, str]
    ) -> tuple[Decision, RequestRecord]:
        """Count the routed request, charge it in flight, and make its decision."""
        request, result = routing.request, routing.result
        assert request is not None
        assert result is not None
        pipeline, cycle, extra = routing.pipeline, routing.cycle, routing.extra
        received_at = routing.received_at
        endpoint = result.targets[0]
        if endpoint.metrics.updated_at > 0:
            self.metrics.signal_age.observe(self._clock() - endpoint.metrics.updated_at)
        self.metrics.routed(
            routing.model,
            request.fairness_id,
            request.priority,
            request.size,
            routing.seconds,
            endpoint.name,
            endpoint.namespace,
            endpoint.port,
        )
        outputs = cycle.outputs
        if request.body:
            extra.append((CONTENT_LENGTH, str(len(request.body))))
        extra.extend(outputs.set_headers.items())
        response_headers = outputs.response_headers
        if self.decisions is not None:
            self._log_decision(request.request_id, request, routing.candidates, result, cycle, None)
            if headers.get(DEBUG) == "1":
                response_headers[DECISION] = explanation_header(
                    result, cycle.empty_profiles, cycle.explained()
                )
        charges = outputs.charges_for(endpoint.key)
        record = self._record(
            request.request_id, received_at, endpoint, routing.model, extra, charges
        )
        if pipeline.response_complete:
            # The hooks get the request without its payload: the body (possibly megabytes)
            # is not held for the length of the response.
            record.request = request.replace(body=b"", messages=None, prompt=None)
            record.result, record.pipeline = result, pipeline
        decision = Decision(
            destination=",".join(t.key for t in result.targets),
            body=request.body,
            body_mutated=request.body_mutated,
            set_headers=tuple(extra),
            remove_headers=tuple(sorted(outputs.remove_headers)),
            response_headers=tuple(response_headers.items()),
            response_model=_response_model(request),
        )
        return decision, record

    def _log_decision(
        self,
        request_id: str,
        request: InferenceRequest | None,
        candidates: int,
        result: SchedulingResult | None,
        cycle: CycleState,
        error: str | None,
    ) -> None:
        if self.decisions is None:
            return
        self.decisions.add(
            DecisionRecord(
                at=time.time(),
                request_id=request_id,
                model=request.model if request else None,
                target_model=request.target_model if request else None,
                candidates=candidates,
                result=result,
                empty_profiles=dict(cycle.empty_profiles),
                error=error,
                data=cycle.explained(),
            )
        )

    def _record(
        self,
        request_id: str,
        received_at: float,
        endpoint: Endpoint,
        model: tuple[str, str],
        extra: list[tuple[str, str]],
        charges: tuple[InFlightCharge, ...],
    ) -> RequestRecord:
        """The routed request's record, charged in flight; with the access log reporting ends,
        the decision carries the exchange id the log entry will name."""
        record = self.settlement.open(request_id, received_at, endpoint, model, charges)
        if record.exchange_id:
            extra.append((EXCHANGE_ID, record.exchange_id))
        return record

    def _apply_resources(self, request: InferenceRequest) -> InferenceRequest:
        """The request after the model rewrite that applies to its model (it overrides the
        rewrite header), with the priority of the objective it names (0 for a name no
        objective has; without a name, the priority stays what the parser set)."""
        model = request.model
        if model and request.kind is not ApiKind.PASSTHROUGH:
            choice = self.resources.rewrite(model, self._rng)
            if choice is not None:
                if choice.target != request.target_model:
                    request = rewrite_model(request, choice.target)
                self.metrics.model_rewritten(choice.resource, model, choice.target)
        if request.objective:
            priority = self.resources.priority(request.objective)
            if priority != request.priority:
                request = request.replace(priority=priority)
        return request

    def _route_anywhere(
        self, request_id: str, received_at: float, extra: list[tuple[str, str]]
    ) -> tuple[Decision, RequestRecord]:
        """A request without a body: any endpoint of the pool (the subset hint is ignored, as
        in llm-d), chosen at random."""
        endpoints = self.store.candidates(None, self._clock())
        model = self.metrics.models(None, None)
        if not endpoints:
            self.metrics.failed(model, "ServiceUnavailable", "default-flow", 0)
            raise ServiceUnavailable(
                "no endpoints available in the pool", dropped_reason="rejected-no-endpoints"
            )
        endpoint = self._rng.choice(endpoints)
        self.metrics.routed(
            model, "default-flow", 0, 0, None, endpoint.name, endpoint.namespace, endpoint.port
        )
        charges = (InFlightCharge(endpoint.key, requests=1),)
        record = self._record(request_id, received_at, endpoint, model, extra, charges)
        decision = Decision(destination=endpoint.key, body=b"", set_headers=tuple(extra))
        return decision, record

    def internal_error(self) -> None:
        """A bug surfaced while routing: count it (the stream answers 500)."""
        self.metrics.failed(("", ""), "Internal", "default-flow", 0)


def _response_model(request: InferenceRequest) -> tuple[str, str] | None:
    if request.model and request.target_model and request.target_model != request.model:
        return request.target_model, request.model
    return None
