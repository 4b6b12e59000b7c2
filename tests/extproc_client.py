"""An ext-proc client written from Envoy's protobufs, independent of the router's codec.

It plays Envoy's part of the protocol so tests can drive the router's gRPC server directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as modes
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import json_format, struct_pb2

if TYPE_CHECKING:
    from collections.abc import Mapping

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

    async def _requests(self):
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

    async def _requests(self):
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
