"""The ext-proc stream of one HTTP request, as a state machine with no I/O.

Theory of operation
-------------------
Envoy opens one gRPC stream per HTTP request and sends, in order: request headers, the request
body, optionally request trailers, then (as its processing mode asks) response headers, response
body and response trailers. ``ExtProcStream.receive`` takes each as a typed event and returns the
actions to send back. The first message says how Envoy sends bodies (``protocol_config``); the
routing decision needs the whole request body, and two body modes allow that:

- **FULL_DUPLEX_STREAMED** (llm-d's setting, which Gateway implementations generate). Envoy
  streams body chunks as they come and waits for nothing, but it cannot forward the request until
  it has the headers response. So the headers response is held back until the body is complete,
  then sent with the decision (destination header, ``envoy.lb`` metadata, ``clear_route_cache``),
  followed by the body itself as ``streamed_response`` chunks of at most 62,000 bytes, the last
  one ending the stream, and a trailers response if the request had trailers.
- **BUFFERED** (cheaper; our own bootstrap can use it). Envoy sends the headers, waits for an
  answer (given at once, unchanged), buffers the body and sends it in one message. The request
  has not left yet, so the decision rides on the answer to the body: a header mutation with
  ``clear_route_cache``, and no body at all unless the router changed it.

A request without a body is complete with its headers and is answered in the headers response,
in every mode. Other request body modes (STREAMED, NONE) forward the request before the body is
seen, so they cannot route by body: the stream answers 500 saying so.

The rest, in the order the stream meets it:

1. The body accumulates up to ``max_body_bytes``; beyond it the request is refused (413).
2. When the request is complete, ``receive`` returns ``NeedDecision``. The caller routes it
   (possibly asynchronously, e.g. after queueing) and calls ``decide`` or ``fail``; ``fail``
   sends an immediate response and the stream is done.
3. Response headers are answered at once and tell the status and whether the body is an event
   stream. Response body messages are answered as the mode requires (echoed chunks in full
   duplex, an unchanged answer otherwise) and scanned for token usage on the way. The response
   is complete at its ``end_of_stream`` or its trailers.
4. Envoy may answer the client itself before the request is routed (a body over its buffer limit
   gets 413): the response headers of that local reply then arrive during the request phase, and
   pass through like any response.
5. The transport may end at any point: the client goes away, or Envoy closes the stream after the
   last message its mode asks for (with the response body off and response trailers on, that is
   exactly when the HTTP exchange ends). ``outcome`` says how far the exchange got, so whoever
   accounts for the request settles exactly once.

An event that breaks these rules is a protocol error: the stream answers 500 and is done.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from llmd_router.extproc.events import (
    Action,
    BodyChunk,
    BodyMode,
    BodyResponse,
    Event,
    HeadersResponse,
    ImmediateResponse,
    NeedDecision,
    Phase,
    RequestBody,
    RequestHeaders,
    RequestTrailers,
    ResponseBody,
    ResponseHeaders,
    ResponseTrailers,
    TrailersResponse,
)
from llmd_router.headers import DESTINATION, LB_NAMESPACE, RESPONSE_HEADERS_NAMESPACE
from llmd_router.parsing.usage import SseUsageScanner, usage_from_json
from llmd_router.requestcontrol.exchange import Decision, Outcome

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmd_router.errors import RouterError
    from llmd_router.types import Metadata

__all__ = ["BODY_CHUNK_LIMIT", "ExtProcStream", "StreamState"]

# Some Envoy builds cap a streamed chunk at 64 KiB; llm-d uses 62,000 bytes.
BODY_CHUNK_LIMIT: Final = 62_000
_MAX_BUFFERED_RESPONSE: Final = 4 << 20  # whole JSON responses kept for usage up to this size
_ROUTABLE: Final = frozenset({"full_duplex_streamed", "buffered", "buffered_partial", None})


class StreamState(enum.Enum):
    REQUEST_HEADERS = "request_headers"
    REQUEST_BODY = "request_body"
    DECIDING = "deciding"
    FORWARDED = "forwarded"
    RESPONSE_BODY = "response_body"
    DONE = "done"


def _chunks(phase: Phase, body: bytes) -> list[Action]:
    """``body`` as streamed chunks of at most BODY_CHUNK_LIMIT; the last one ends the stream."""
    if len(body) <= BODY_CHUNK_LIMIT:
        return [BodyChunk(phase, body, True)]
    return [
        BodyChunk(
            phase, body[start : start + BODY_CHUNK_LIMIT], start + BODY_CHUNK_LIMIT >= len(body)
        )
        for start in range(0, len(body), BODY_CHUNK_LIMIT)
    ]


class ExtProcStream:
    """One ext-proc stream. Not thread-safe; one instance per gRPC stream."""

    __slots__ = (
        "_body",
        "_body_size",
        "_buffered",
        "_client_headers",
        "_duplex_response",
        "_has_body",
        "_headers",
        "_json",
        "_max_body",
        "_metadata",
        "_request_trailers",
        "_response_model",
        "_sse",
        "outcome",
        "state",
    )

    def __init__(self, *, max_body_bytes: int) -> None:
        self.state = StreamState.REQUEST_HEADERS
        self.outcome = Outcome()
        self._max_body = max_body_bytes
        self._headers: dict[str, str] = {}
        self._metadata: Metadata = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._has_body = False
        self._buffered = False  # the request body comes BUFFERED, not FULL_DUPLEX_STREAMED
        self._duplex_response = True  # response body chunks are answered as streamed chunks
        self._request_trailers = False
        self._response_model: tuple[bytes, bytes] | None = None
        self._client_headers: tuple[tuple[str, str], ...] = ()  # set on the response
        self._sse: SseUsageScanner | None = None
        self._json: list[bytes] | None = None

    @property
    def done(self) -> bool:
        return self.state is StreamState.DONE

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    # ------------------------------------------------------------------ inbound

    def receive(self, event: Event) -> list[Action]:
        state = self.state
        if isinstance(event, RequestBody) and state is StreamState.REQUEST_BODY:
            return self._request_body(event)
        if isinstance(event, ResponseBody) and state is StreamState.RESPONSE_BODY:
            return self._response_body(event)
        if isinstance(event, RequestHeaders) and state is StreamState.REQUEST_HEADERS:
            return self._request_headers(event)
        if isinstance(event, RequestTrailers) and state is StreamState.REQUEST_BODY:
            self._request_trailers = True
            return self._complete_request(has_body=True)
        if isinstance(event, ResponseHeaders) and state in (
            StreamState.FORWARDED,
            StreamState.REQUEST_BODY,
        ):
            # Before a decision, a response can only be Envoy's own local reply (its buffer
            # overflowed: 413; a timeout: 408): let it through untouched.
            return self._response_headers(event)
        if isinstance(event, ResponseTrailers) and state in (
            StreamState.RESPONSE_BODY,
            StreamState.DONE,
        ):
            if state is StreamState.RESPONSE_BODY:
                self._response_complete()
            return [TrailersResponse("response")]
        if state is StreamState.DONE:
            return []  # late messages after an immediate response: nothing more to say
        return self._protocol_error(f"{type(event).__name__} not expected in state {state.value}")

    def _request_headers(self, event: RequestHeaders) -> list[Action]:
        self._headers = event.headers
        self._metadata = event.metadata
        if event.response_body_mode is not None:
            self._duplex_response = event.response_body_mode == "full_duplex_streamed"
            self.outcome.response_on_stream = event.response_body_mode != "none"
        if event.end_of_stream:
            return self._complete_request(has_body=False)
        mode: BodyMode | None = event.request_body_mode
        if mode not in _ROUTABLE:
            return self.fail_with(
                500,
                b"inference error: Internal - the ext_proc request body "
                b"mode %s forwards the request before its body is seen; "
                b"configure FULL_DUPLEX_STREAMED or BUFFERED" % str(mode).upper().encode(),
            )
        self.state = StreamState.REQUEST_BODY
        if mode in ("buffered", "buffered_partial"):
            self._buffered = True
            return [HeadersResponse("request")]  # Envoy now buffers the body and sends it
        return []

    def _request_body(self, event: RequestBody) -> list[Action]:
        if event.body:
            self._body_size += len(event.body)
            if self._body_size > self._max_body:
                return self.fail_with(
                    413,
                    b"inference error: PayloadTooLarge - request body "
                    b"exceeds the limit of %d bytes" % self._max_body,
                )
            self._body.append(event.body)
        if event.metadata:
            self._metadata = event.metadata
        if event.end_of_stream:
            return self._complete_request(has_body=True)
        return []

    def _complete_request(self, *, has_body: bool) -> list[Action]:
        self.state = StreamState.DECIDING
        self._has_body = has_body
        body = b"".join(self._body)
        self._body = []
        return [NeedDecision(self._headers, body, self._metadata, has_body)]

    # ------------------------------------------------------------------ the decision

    def decide(self, decision: Decision) -> list[Action]:
        """Answer the request with a routing decision (after ``NeedDecision``)."""
        if self.state is not StreamState.DECIDING:
            return self._protocol_error("decide() without a pending decision")
        metadata: dict[str, str] = {DESTINATION: decision.destination}
        if decision.dynamic_metadata:
            metadata.update(decision.dynamic_metadata)
        set_headers = ((DESTINATION, decision.destination), *decision.set_headers)
        dynamic: dict[str, Mapping[str, str]] = {LB_NAMESPACE: metadata}
        if decision.response_headers:
            # Envoy copies these onto the response when the response skips the router; when
            # it passes through, the response-headers answer sets them.
            dynamic[RESPONSE_HEADERS_NAMESPACE] = dict(decision.response_headers)
            self._client_headers = decision.response_headers
        remove = decision.remove_headers
        actions: list[Action]
        if not self._has_body:
            actions = [HeadersResponse("request", set_headers, True, dynamic, remove)]
        elif self._buffered:
            actions = [
                BodyResponse(
                    "request",
                    set_headers,
                    True,
                    dynamic,
                    decision.body if decision.body_mutated else None,
                    remove,
                )
            ]
        else:
            actions = [
                HeadersResponse("request", set_headers, True, dynamic, remove),
                *_chunks("request", decision.body),
            ]
        if self._request_trailers:
            actions.append(TrailersResponse("request"))
        if decision.response_model is not None:
            upstream, client = decision.response_model
            self._response_model = (
                b'"model":"%s"' % upstream.encode(),
                b'"model":"%s"' % client.encode(),
            )
        self.outcome.decided = True
        self.state = StreamState.FORWARDED
        return actions

    def fail(self, error: RouterError) -> list[Action]:
        """Answer the request with the error's immediate response."""
        return self.fail_with(error.status, error.body(), tuple(error.headers()))

    def fail_with(
        self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()
    ) -> list[Action]:
        self.state = StreamState.DONE
        self.outcome.immediate_status = status
        return [ImmediateResponse(status, body, headers)]

    # ------------------------------------------------------------------ response path

    def _response_headers(self, event: ResponseHeaders) -> list[Action]:
        headers = event.headers
        status = headers.get(":status")
        self.outcome.response_status = int(status) if status and status.isdigit() else None
        streaming = "text/event-stream" in headers.get("content-type", "")
        self.outcome.response_streaming = streaming
        if streaming:
            self._sse = SseUsageScanner()
        else:
            self._json = []
        self.state = StreamState.RESPONSE_BODY
        if event.end_of_stream:
            self._response_complete()
        return [HeadersResponse("response", self._client_headers)]

    def _response_body(self, event: ResponseBody) -> list[Action]:
        body = event.body
        original = body
        if self._response_model is not None and body:
            body = body.replace(*self._response_model)
        outcome = self.outcome
        outcome.response_bytes += len(body)
        if self._sse is not None:
            self._sse.feed(body)
        elif self._json is not None:
            if outcome.response_bytes <= _MAX_BUFFERED_RESPONSE:
                self._json.append(body)
            else:
                self._json = None  # too large to keep for usage; it still passes through
        if event.end_of_stream:
            self._response_complete()
        if self._duplex_response:
            return [BodyChunk("response", body, event.end_of_stream)]
        return [BodyResponse("response", body=body if body is not original else None)]

    def _response_complete(self) -> None:
        outcome = self.outcome
        if self._sse is not None:
            self._sse.finish()
            outcome.usage = self._sse.usage
        elif self._json:
            outcome.usage = usage_from_json(b"".join(self._json))
        self._json = None
        outcome.response_complete = True
        self.state = StreamState.DONE

    def _protocol_error(self, message: str) -> list[Action]:
        self.outcome.protocol_error = message
        return self.fail_with(
            500, b"inference error: Internal - ext_proc protocol error: " + message.encode()
        )
