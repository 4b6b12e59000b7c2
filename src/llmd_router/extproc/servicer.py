"""The ext-proc gRPC service: it pumps messages, and nothing else.

Each stream: decode a message, feed the protocol, send what it answers; when the protocol needs a
routing decision, ask the director and feed the answer back. The response's first body chunk
releases what the request was charged until then (its prompt's tokens). Whatever ends the
stream (response complete, immediate response, client gone, Envoy closing it, an error),
``finally`` tells the director, which releases the request's in-flight count exactly once: at
once, or when the access log reports the request's end (``AccessLogServicer``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from llmd_router.errors import Internal, RouterError
from llmd_router.extproc.codec import (
    ACCESS_LOG_ACK,
    AccessLogServiceServicer,
    ExternalProcessorServicer,
    decode,
    decode_access_logs,
    encode,
)
from llmd_router.extproc.events import NeedDecision, ResponseBody
from llmd_router.extproc.protocol import ExtProcStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from llmd_router.extproc.codec import AccessLogsMessage, ProcessingRequest, ProcessingResponse
    from llmd_router.requestcontrol import Director, RequestRecord, Settlement

__all__ = ["AccessLogServicer", "ExtProcServicer"]

_log = logging.getLogger(__name__)


class ExtProcServicer(ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(
        self,
        director: Director,
        *,
        max_body_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._director = director
        self._max_body = max_body_bytes
        self._clock = clock

    async def Process(  # the gRPC method name
        self,
        request_iterator: AsyncIterator[ProcessingRequest],
        context: Any,
    ) -> AsyncIterator[ProcessingResponse]:
        stream = ExtProcStream(max_body_bytes=self._max_body)
        record: RequestRecord | None = None
        received = self._clock()
        try:
            async for message in request_iterator:
                event = decode(message)
                if event is None:
                    continue
                if record is not None and record.early and isinstance(event, ResponseBody):
                    self._director.settlement.first_chunk(record)
                for action in stream.receive(event):
                    if isinstance(action, NeedDecision):
                        record, answers = await self._decide(stream, action, received)
                        for answer in answers:
                            yield encode(answer)
                    else:
                        yield encode(action)
                if stream.done:
                    return
        finally:
            if record is not None:
                self._director.settlement.stream_ended(record, stream.outcome)

    async def _decide(
        self,
        stream: ExtProcStream,
        need: NeedDecision,
        received: float,
    ) -> tuple[RequestRecord | None, list[Any]]:
        try:
            decision, record = await self._director.route_async(
                need.headers, need.body, need.metadata, has_body=need.has_body, received_at=received
            )
        except RouterError as exc:
            return None, stream.fail(exc)
        except Exception:  # noqa: BLE001 - a bug must cost one request a 500, not the stream
            _log.exception("routing failed unexpectedly")
            self._director.internal_error()
            return None, stream.fail(Internal("unexpected error while routing the request"))
        return record, stream.decide(decision)


class AccessLogServicer(AccessLogServiceServicer):  # type: ignore[misc]
    """Envoy's access log stream: each batch of entries says which routed requests ended, and
    the settlement settles them. Envoy keeps one stream per worker open for as long as it runs,
    so ``close`` answers them all when the router stops: a server's graceful stop would otherwise
    wait its whole grace period for them. Each open stream reads inside a timeout scope with no
    deadline; ``close`` moves every scope's deadline to now."""

    def __init__(self, settlement: Settlement) -> None:
        self._settlement = settlement
        self._closing = False
        self._scopes: set[asyncio.Timeout] = set()

    async def StreamAccessLogs(  # the gRPC method name
        self,
        request_iterator: AsyncIterator[AccessLogsMessage],
        context: Any,
    ) -> Any:
        if self._closing:
            return ACCESS_LOG_ACK
        scope = asyncio.timeout(None)
        self._scopes.add(scope)
        try:
            async with scope:
                async for message in request_iterator:
                    self._settlement.ended(decode_access_logs(message))
        except TimeoutError:  # closed by the router
            pass
        finally:
            self._scopes.discard(scope)
        return ACCESS_LOG_ACK

    def open(self) -> None:
        self._closing = False

    def close(self) -> None:
        """Answer every access log stream now (Envoy opens a new one when it next logs)."""
        self._closing = True
        now = asyncio.get_running_loop().time()
        for scope in self._scopes:
            scope.reschedule(now)
