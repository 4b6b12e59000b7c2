"""Envoy's side of the ext-proc protocol, for driving the router's real gRPC servicer.

``ExtProcClient`` is written from Envoy's protobufs, independently of the router's codec (a
codec bug cannot hide in both). ``ExtProcHarness`` runs the router's real ext-proc servicer for
a ``Director`` on an in-process gRPC server (loopback, port 0) and connects a client to it;
``exchange`` sends one whole request the way Envoy does with llm-d's settings and returns the
router's decision.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as modes
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import json_format, struct_pb2

from llmd_router.extproc.server import ExtProcServer
from llmd_router.extproc.servicer import AccessLogServicer, ExtProcServicer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from llmd_router.requestcontrol import Director

__all__ = [
    "MODE",
    "AccessLogCall",
    "Call",
    "ExtProcClient",
    "ExtProcHarness",
    "Reply",
    "access_log",
    "read",
    "request_body",
    "request_headers",
    "response_body",
    "response_headers",
]

MODE = {
    "duplex": modes.ProcessingMode.FULL_DUPLEX_STREAMED,
    "buffered": modes.ProcessingMode.BUFFERED,
    "none": modes.ProcessingMode.NONE,
    "streamed": modes.ProcessingMode.STREAMED,
}


def header_map(headers: Mapping[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    )


def request_headers(
    headers: Mapping[str, str],
    *,
    eos: bool = False,
    mode: str = "duplex",
    response_mode: str = "duplex",
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> pb.ProcessingRequest:
    message = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=header_map(headers), end_of_stream=eos),
        protocol_config=pb.ProtocolConfiguration(
            request_body_mode=MODE[mode], response_body_mode=MODE[response_mode]
        ),
    )
    if metadata:
        for namespace, values in metadata.items():
            struct = struct_pb2.Struct()
            struct.update(dict(values))
            message.metadata_context.filter_metadata[namespace].CopyFrom(struct)
    return message


def request_body(body: bytes, *, eos: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=eos))


def response_headers(headers: Mapping[str, str], *, eos: bool = False) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=header_map(headers), end_of_stream=eos)
    )


def response_body(body: bytes, *, eos: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=body, end_of_stream=eos))


@dataclass
class Reply:
    """What one ProcessingResponse says, in plain values."""

    kind: str
    set_headers: dict[str, str] = field(default_factory=dict)
    clear_route_cache: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    body: bytes | None = None
    streamed: bool = False
    end_of_stream: bool = False
    status: int | None = None


def read(response: pb.ProcessingResponse) -> Reply:
    kind = response.WhichOneof("response")
    reply = Reply(kind=kind)
    if response.HasField("dynamic_metadata"):
        reply.metadata = json_format.MessageToDict(response.dynamic_metadata)
    if kind == "immediate_response":
        immediate = response.immediate_response
        reply.status = immediate.status.code
        reply.body = immediate.body
        reply.set_headers = {
            h.header.key: h.header.raw_value.decode() for h in immediate.headers.set_headers
        }
        return reply
    if kind in ("request_trailers", "response_trailers"):
        return reply
    common = getattr(response, kind).response
    reply.set_headers = {
        h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers
    }
    reply.clear_route_cache = common.clear_route_cache
    mutation = common.body_mutation
    if mutation.HasField("streamed_response"):
        reply.streamed = True
        reply.body = mutation.streamed_response.body
        reply.end_of_stream = mutation.streamed_response.end_of_stream
    elif mutation.WhichOneof("mutation") == "body":
        reply.body = mutation.body
    return reply


class Call:
    """One Process stream, seen from Envoy's side."""

    def __init__(self, stub: pb_grpc.ExternalProcessorStub) -> None:
        self._queue: asyncio.Queue[pb.ProcessingRequest | None] = asyncio.Queue()
        self._call = stub.Process(self._requests())

    async def _requests(self) -> AsyncIterator[pb.ProcessingRequest]:
        while (message := await self._queue.get()) is not None:
            yield message

    async def send(self, message: pb.ProcessingRequest) -> None:
        await self._queue.put(message)

    async def recv(self, wait: float = 5.0) -> Reply:
        response = await asyncio.wait_for(self._call.read(), wait)
        assert response is not grpc.aio.EOF, "the router ended the stream"
        return read(response)

    async def end(self) -> None:
        """Half-close: Envoy has nothing more to send."""
        await self._queue.put(None)

    async def finished(self, wait: float = 5.0) -> bool:
        """True once the router has ended the stream."""
        response = await asyncio.wait_for(self._call.read(), wait)
        return response is grpc.aio.EOF

    def cancel(self) -> None:
        self._call.cancel()


def access_log(
    entries: list[tuple[Mapping[str, str], int]],
) -> als_pb2.StreamAccessLogsMessage:
    """A batch of HTTP access log entries: (request headers logged, response code; 0 = none)."""
    message = als_pb2.StreamAccessLogsMessage()
    message.identifier.log_name = "llmd-router"
    for headers, status in entries:
        entry = message.http_logs.log_entry.add()
        entry.request.request_headers.update(headers)
        if status:
            entry.response.response_code.value = status
        entry.response.response_body_bytes = 42
    return message


class AccessLogCall:
    """One StreamAccessLogs stream, as Envoy's access logger keeps it open."""

    def __init__(self, stub: als_pb2_grpc.AccessLogServiceStub) -> None:
        self._queue: asyncio.Queue[als_pb2.StreamAccessLogsMessage | None] = asyncio.Queue()
        self._call = stub.StreamAccessLogs(self._requests())

    async def _requests(self) -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
        while (message := await self._queue.get()) is not None:
            yield message

    async def send(self, message: als_pb2.StreamAccessLogsMessage) -> None:
        await self._queue.put(message)

    async def result(self, wait: float = 5.0) -> grpc.StatusCode:
        """How the router ended the stream."""
        try:
            await asyncio.wait_for(self._call, wait)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


class ExtProcClient:
    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None = None,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=options)
            if credentials
            else grpc.aio.insecure_channel(target, options=options)
        )
        self._stub = pb_grpc.ExternalProcessorStub(self._channel)

    def call(self) -> Call:
        return Call(self._stub)

    def access_log(self) -> AccessLogCall:
        return AccessLogCall(als_pb2_grpc.AccessLogServiceStub(self._channel))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> ExtProcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ExtProcHarness:
    """``async with ExtProcHarness(director) as harness:`` the router's ext-proc servicer for
    ``director`` on 127.0.0.1 (free ports, plaintext), and ``harness.client`` playing Envoy."""

    def __init__(self, director: Director, *, max_body_bytes: int = 32 << 20) -> None:
        self.director = director
        self.server = ExtProcServer(
            ExtProcServicer(director, max_body_bytes=max_body_bytes),
            host="127.0.0.1",
            port=0,
            health_port=0,
            access_log=AccessLogServicer(director.settlement),
        )
        self._client: ExtProcClient | None = None

    @property
    def client(self) -> ExtProcClient:
        if self._client is None:
            raise RuntimeError("the harness is not running (use it as 'async with')")
        return self._client

    async def __aenter__(self) -> ExtProcHarness:
        await self.server.start()
        await self.server.set_ready(ready=True)
        self._client = ExtProcClient(f"127.0.0.1:{self.server.port}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self.server.stop(0)

    async def exchange(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        mode: Literal["duplex", "buffered"] = "duplex",
    ) -> Reply:
        """Send one request (headers, then the whole body) and return the router's first
        answer: the decision, or the immediate response that refused it. The stream is left
        open, as Envoy leaves it while the response is under way; it ends with the harness."""
        call = self.client.call()
        if mode == "buffered":
            await call.send(request_headers(headers, mode="buffered", response_mode="none"))
            await call.recv()  # the headers are answered at once, unchanged
        else:
            await call.send(request_headers(headers, metadata=metadata))
        await call.send(request_body(body, eos=True))
        return await call.recv()
