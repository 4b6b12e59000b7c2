"""How a routed request ends: its in-flight charges refunded, its metrics, its response hooks.

``open`` records a routed request and charges it to the in-flight ledger. ``settle`` releases
it when the exchange ends, however it ends: response complete, client gone, stream broken. A
record settles exactly once, so in-flight counts never drift. What was charged only until the
response's first chunk (a prompt's tokens) is released by ``first_chunk`` when that chunk passes
through the router, or with the rest when the response does not.

Who says that a request ended depends on how the proxy is set up (``completion_source``):

- ``stream``: the ext-proc stream, which in llm-d's settings stays open for the whole response.
  When it ends, the request ended (``stream_ended`` settles).
- ``access-log``: in our buffered bootstrap no response message reaches the ext-proc stream,
  so it says nothing of the response's status, and when Envoy closes it is Envoy's choice
  (1.40 waits for the end of the exchange; nothing promises it). Envoy's access log reports
  the end and the status instead. The decision then carries a fresh ``x-llmd-exchange-id``;
  the record waits, keyed by it, until its entry arrives (``ended``). A stream that ends before
  its decision went out, or whose response was to pass through it (llm-d's settings), still
  settles at once. A record whose entry never comes (Envoy died, or dropped log entries) is
  released by ``sweep`` after ``max_pending_s``, so the in-flight count heals.

When a routed request settles, the response hooks of the configuration that routed it run, even
if the configuration has been reloaded since.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Literal

from llmd_router.framework import Completion
from llmd_router.requestcontrol.exchange import Ended, Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.inflight import InFlightCharge, InFlightLedger
    from llmd_router.framework import SchedulingResult
    from llmd_router.observability.metrics import RouterMetrics
    from llmd_router.parsing import InferenceRequest
    from llmd_router.pipeline import Pipeline

__all__ = ["CompletionSource", "RequestRecord", "Settlement"]

_log = logging.getLogger(__name__)

CompletionSource = Literal["stream", "access-log"]


@dataclass(slots=True)
class RequestRecord:
    """What must be settled when a routed request ends."""

    request_id: str
    received_at: float
    endpoint: Endpoint
    model: tuple[str, str]
    charges: tuple[InFlightCharge, ...] = ()  # what the request costs in the in-flight ledger
    early: tuple[InFlightCharge, ...] = ()  # of those, what its response's first chunk releases
    exchange_id: str = ""  # set when the access log, not the stream, is to report the end
    settled: bool = False
    # For the response hooks: the request (its body dropped), its result, and the
    # configuration that routed it. None for requests routed without scheduling.
    request: InferenceRequest | None = None
    result: SchedulingResult | None = None
    pipeline: Pipeline | None = None


class Settlement:
    def __init__(
        self,
        inflight: InFlightLedger,
        metrics: RouterMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        completion_source: CompletionSource = "stream",
        max_pending_s: float = 3600.0,
    ) -> None:
        self._inflight = inflight
        self.metrics = metrics
        self._clock = clock
        self.completion_source: CompletionSource = completion_source
        self._max_pending = max_pending_s
        # Routed requests waiting for their access log entry, oldest first.
        self._pending: dict[str, RequestRecord] = {}
        self._exchange_prefix = f"{os.getpid():x}-{uuid.uuid4().hex[:8]}-"
        self._exchange_ids = itertools.count()

    def open(
        self,
        request_id: str,
        received_at: float,
        endpoint: Endpoint,
        model: tuple[str, str],
        charges: tuple[InFlightCharge, ...],
    ) -> RequestRecord:
        """Record a routed request and charge it in flight. In access-log mode it gets an
        exchange id (``record.exchange_id``) and waits for the entry that names it."""
        self._inflight.charge(charges)
        record = RequestRecord(request_id, received_at, endpoint, model, charges)
        if any(c.until_first_chunk for c in charges):
            record.charges = tuple(c for c in charges if not c.until_first_chunk)
            record.early = tuple(c for c in charges if c.until_first_chunk)
        if self.completion_source == "access-log":
            record.exchange_id = f"{self._exchange_prefix}{next(self._exchange_ids)}"
            self._pending[record.exchange_id] = record
        return record

    def first_chunk(self, record: RequestRecord) -> None:
        """The first chunk of the routed request's response passed through the router: its
        prompt has been computed; release what was charged until then. Idempotent."""
        if record.early and not record.settled:
            self._inflight.refund(record.early)
            record.early = ()

    def stream_ended(self, record: RequestRecord, outcome: Outcome) -> None:
        """The ext-proc stream of a routed request ended: settle now, unless the access log
        will say when the request ends: the decision went out, and the response was not to
        pass through this stream (Envoy announced response body mode NONE, or nothing) and did
        not, as in our buffered bootstrap."""
        if (
            self.completion_source == "access-log"
            and outcome.decided
            and not outcome.response_on_stream
            and outcome.response_status is None
        ):
            return
        self.settle(record, outcome)

    def ended(self, ends: Iterable[Ended]) -> None:
        """Entries of the proxy's access log: settle the requests they name. Entries for
        requests already settled, or unknown here (routed by an earlier process), are ignored."""
        for end in ends:
            record = self._pending.get(end.exchange_id)
            if record is not None:
                self.settle(
                    record, Outcome(response_status=end.status, response_bytes=end.response_bytes)
                )

    @property
    def pending(self) -> int:
        """Routed requests waiting for their access log entry."""
        return len(self._pending)

    def sweep(self) -> int:
        """Release requests whose access log entry is overdue (``max_pending_s``); how many."""
        cutoff = self._clock() - self._max_pending
        overdue: list[RequestRecord] = []
        for record in self._pending.values():  # insertion order: oldest first
            if record.received_at > cutoff:
                break
            overdue.append(record)
        self._release(overdue)
        if overdue:
            _log.warning(
                "released %d requests whose end the proxy never reported within %gs",
                len(overdue),
                self._max_pending,
            )
        return len(overdue)

    def abandon_pending(self) -> int:
        """The proxy restarted: the requests it carried are gone; release them all."""
        return self._release(list(self._pending.values()))

    def _release(self, records: list[RequestRecord]) -> int:
        """Settle requests whose end will never be reported, with nothing known of it."""
        for record in records:
            self.settle(record, Outcome())
        return len(records)

    def settle(self, record: RequestRecord, outcome: Outcome) -> None:
        """The exchange of a routed request ended. Idempotent."""
        if record.settled:
            return
        record.settled = True
        if record.exchange_id:
            self._pending.pop(record.exchange_id, None)
        self._inflight.refund(record.charges)
        if record.early:
            self._inflight.refund(record.early)
            record.early = ()
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
        if record.pipeline is not None and record.request is not None and record.result:
            completion = Completion(
                status=status,
                usage=usage,
                response_bytes=outcome.response_bytes,
                duration_s=self._clock() - record.received_at,
            )
            for hook, observe in record.pipeline.response_complete:
                started = perf_counter()
                try:
                    hook.response_complete(record.request, record.result, completion)
                except Exception:  # noqa: BLE001  settling must finish whatever a hook does
                    _log.exception("response hook %r failed", hook.name)
                observe(perf_counter() - started)
            record.request = record.result = record.pipeline = None
