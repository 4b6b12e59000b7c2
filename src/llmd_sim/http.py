"""A small HTTP/1.1 server on asyncio: httptools parses, handlers answer through a Responder.

Why not a web framework: a simulated fleet streams tens of thousands of tokens a second on two
cores, and the engine produces tokens from a timer callback, not from a coroutine per request.
With a framework each token costs a task wake-up and an awaited write (12.6 us per token measured
with aiohttp on this machine, 7.9 us with this module); here the engine calls
``Responder.write`` directly. Parsing stays with httptools (uvicorn's parser).

What the server guarantees:

- Keep-alive by default (HTTP/1.1), ``Connection: close`` honoured, pipelined requests answered in
  order (a connection handles one request at a time and queues the rest).
- A body larger than the limit gets 413 before it is read (Content-Length) or as soon as it
  crosses the limit (chunked), then the connection closes. Unparseable requests get 400 and close.
- ``Expect: 100-continue`` is answered so clients such as curl do not stall.
- Streamed responses use chunked transfer encoding. ``Responder.abort`` cuts the connection without
  the final chunk, which a client sees as a truncated response (the "drop mid-stream" fault).
- When the peer disconnects, the responder's ``on_close`` callback runs once, so whoever produces
  the response can stop (the engine frees the sequence's KV blocks).

Handlers are plain functions called on the event loop; they must not block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final, cast

import httptools

__all__ = ["Handler", "HttpProtocol", "HttpRequest", "Responder"]

_log = logging.getLogger(__name__)

_REASONS: Final = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Request Entity Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    keep_alive: bool
    received_at: float


Handler = Callable[[HttpRequest, "Responder"], None]


class _DateCache:
    """The Date header, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


_DATE = _DateCache()


def _head(status: int, headers: Iterable[tuple[str, str]], extra: bytes) -> bytes:
    lines = [
        b"HTTP/1.1 %d %s\r\ndate: %s\r\nserver: uvicorn\r\n"
        % (status, _REASONS.get(status, "Unknown").encode(), _DATE.get())
    ]
    lines.extend(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers)
    lines.append(extra)
    return b"".join(lines)


class Responder:
    """Writes the response to one request. Exactly one of ``send`` or the stream calls."""

    __slots__ = ("_conn", "_keep_alive", "_streaming", "done", "on_close", "status")

    def __init__(self, conn: HttpProtocol, keep_alive: bool) -> None:
        self._conn = conn
        self._keep_alive = keep_alive
        self._streaming = False
        self.done = False
        self.status = 0
        self.on_close: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        """The peer is gone (or the connection was cut); further writes are dropped."""
        return self._conn.closed

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        if self.done:
            return
        self.status = status
        media = b"content-type: %s\r\n" % content_type.encode() if content_type else b""
        extra = b"%scontent-length: %d\r\n%s\r\n" % (
            media,
            len(body),
            b"" if self._keep_alive else b"connection: close\r\n",
        )
        self._conn.write(_head(status, headers, extra) + body)
        self._finish()

    def start_stream(
        self,
        status: int = 200,
        content_type: str = "text/event-stream; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self._streaming = True
        extra = b"content-type: %s\r\ntransfer-encoding: chunked\r\n%s\r\n" % (
            content_type.encode(),
            b"" if self._keep_alive else b"connection: close\r\n",
        )
        self._conn.write(_head(status, headers, extra))

    def write(self, data: bytes) -> None:
        """One chunk of a streamed body (empty data is skipped: it would end the body)."""
        if data and not self.done:
            self._conn.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        if self.done:
            return
        self._conn.write(b"0\r\n\r\n")
        self._finish()

    def abort(self) -> None:
        """Cut the connection now, mid-response."""
        self.done = True
        self._conn.abort()

    def _finish(self) -> None:
        self.done = True
        self._conn.response_done(self._keep_alive)


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(
        self, handler: Handler, max_body: int, connections: set[HttpProtocol] | None = None
    ) -> None:
        self._handler = handler
        self._connections = connections
        self._max_body = max_body
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._rejected = False
        self._pending: deque[HttpRequest] = deque()
        self._current: Responder | None = None
        self.closed = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast("asyncio.Transport", transport)
        if self._connections is not None:
            self._connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, b'{"detail":"protocol upgrades are not supported"}')
        except httptools.HttpParserError as exc:
            detail = str(exc).replace('"', "'")
            self._reject(400, b'{"detail":"malformed HTTP request: %s"}' % detail.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._connections is not None:
            self._connections.discard(self)
        current, self._current = self._current, None
        if current is not None and not current.done and current.on_close is not None:
            current.on_close()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = val if old is None else f"{old}, {val}"

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._reject(413, self._too_large())
            return
        if self._headers.get("expect", "").lower() == "100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._rejected:
            return
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._reject(413, self._too_large())
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        parsed = httptools.parse_url(self._url)
        request = HttpRequest(
            method=self._parser.get_method().decode(),
            path=parsed.path.decode("latin-1") if parsed.path else "/",
            query=parsed.query.decode("latin-1") if parsed.query else "",
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self._parser.should_keep_alive(),
            received_at=time.monotonic(),
        )
        self._pending.append(request)
        if self._current is None:
            self._dispatch()

    # -- internals used by Responder

    def write(self, data: bytes) -> None:
        if not self.closed and self._transport is not None:
            self._transport.write(data)

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def response_done(self, keep_alive: bool) -> None:
        self._current = None
        if not keep_alive:
            self.closed = True
            if self._transport is not None:
                self._transport.close()
            return
        if self._pending:
            # Answer the next pipelined request on a fresh loop iteration, not re-entrantly.
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        if self._current is not None or not self._pending or self.closed:
            return
        request = self._pending.popleft()
        responder = Responder(self, request.keep_alive)
        self._current = responder
        try:
            self._handler(request, responder)
        except Exception:  # noqa: BLE001 - a handler bug answers 500, is logged, and the server carries on
            _log.exception("handler failed for %s %s", request.method, request.path)
            if not responder.done:
                responder.send(500, b'{"detail":"internal simulator error"}')

    def _too_large(self) -> bytes:
        return b'{"detail":"request body exceeds the limit of %d bytes"}' % self._max_body

    def _reject(self, status: int, body: bytes) -> None:
        """Answer with an error and close: the rest of the stream cannot be trusted."""
        self._rejected = True
        if self._current is None:
            responder = Responder(self, keep_alive=False)
            self._current = responder
            responder.send(status, body)
        elif self._transport is not None:
            self._transport.close()
