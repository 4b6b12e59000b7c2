"""Envoy's protobufs to and from our events. The only module that imports ``envoy.*``.

Two services: ext-proc (one stream per HTTP request) and the access log service (one long-lived
stream per Envoy worker, batches of entries for requests that ended).

Header values travel as ``raw_value`` bytes (Envoy fills ``raw_value`` and leaves ``value``
empty); they are decoded as latin-1, which maps every byte to one character and back. Of the
request's filter metadata only the namespaces the protocol uses are converted to Python values.
Responses that never vary are built once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from llmd_router.extproc.events import (
    Action,
    BodyChunk,
    BodyMode,
    BodyResponse,
    Event,
    HeadersResponse,
    ImmediateResponse,
    RequestBody,
    RequestHeaders,
    RequestTrailers,
    ResponseBody,
    ResponseHeaders,
    ResponseTrailers,
    TrailersResponse,
)
from llmd_router.headers import EXCHANGE_ID, LB_NAMESPACE, SUBSET_NAMESPACE
from llmd_router.requestcontrol.exchange import Ended

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from llmd_router.types import Metadata

__all__ = [
    "ACCESS_LOG_ACK",
    "SERVICE_NAME",
    "AccessLogServiceServicer",
    "AccessLogsMessage",
    "ExternalProcessorServicer",
    "ExternalProcessorStub",
    "ProcessingRequest",
    "ProcessingResponse",
    "add_access_log_to_server",
    "add_to_server",
    "decode",
    "decode_access_logs",
    "encode",
]

SERVICE_NAME: Final = "envoy.service.ext_proc.v3.ExternalProcessor"
ProcessingRequest = pb.ProcessingRequest
ProcessingResponse = pb.ProcessingResponse
ExternalProcessorServicer = pb_grpc.ExternalProcessorServicer
ExternalProcessorStub = pb_grpc.ExternalProcessorStub
add_to_server = pb_grpc.add_ExternalProcessorServicer_to_server
AccessLogsMessage = als_pb2.StreamAccessLogsMessage
AccessLogServiceServicer = als_pb2_grpc.AccessLogServiceServicer
add_access_log_to_server = als_pb2_grpc.add_AccessLogServiceServicer_to_server
ACCESS_LOG_ACK: Final = als_pb2.StreamAccessLogsResponse()
_NAMESPACES: Final = (SUBSET_NAMESPACE, LB_NAMESPACE)
_MODES: Final[dict[int, BodyMode]] = {
    processing_mode_pb2.ProcessingMode.NONE: "none",
    processing_mode_pb2.ProcessingMode.STREAMED: "streamed",
    processing_mode_pb2.ProcessingMode.BUFFERED: "buffered",
    processing_mode_pb2.ProcessingMode.BUFFERED_PARTIAL: "buffered_partial",
    processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED: "full_duplex_streamed",
    processing_mode_pb2.ProcessingMode.GRPC: "grpc",
}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    if kind == "struct_value":
        return {k: _value(v) for k, v in value.struct_value.fields.items()}
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _metadata(message: pb.ProcessingRequest) -> Metadata:
    if not message.HasField("metadata_context"):
        return {}
    filters = message.metadata_context.filter_metadata
    return {
        ns: {k: _value(v) for k, v in filters[ns].fields.items()}
        for ns in _NAMESPACES
        if ns in filters
    }


def _headers(header_map: base_pb2.HeaderMap) -> dict[str, str]:
    return {
        h.key: h.raw_value.decode("latin-1") if h.raw_value else h.value for h in header_map.headers
    }


def decode(message: pb.ProcessingRequest) -> Event | None:
    """The event a ProcessingRequest carries, or None for one we do not know."""
    which = message.WhichOneof("request")
    if which == "request_body":
        body = message.request_body
        return RequestBody(body.body, body.end_of_stream, _metadata(message))
    if which == "response_body":
        body = message.response_body
        return ResponseBody(body.body, body.end_of_stream)
    if which == "request_headers":
        headers = message.request_headers
        request_mode: BodyMode | None = None
        response_mode: BodyMode | None = None
        if message.HasField("protocol_config"):
            config = message.protocol_config
            request_mode = _MODES.get(config.request_body_mode)
            response_mode = _MODES.get(config.response_body_mode)
        return RequestHeaders(
            _headers(headers.headers),
            headers.end_of_stream,
            _metadata(message),
            request_mode,
            response_mode,
        )
    if which == "response_headers":
        headers = message.response_headers
        return ResponseHeaders(_headers(headers.headers), headers.end_of_stream, _metadata(message))
    if which == "request_trailers":
        return RequestTrailers(_metadata(message))
    if which == "response_trailers":
        return ResponseTrailers()
    return None


_OVERWRITE: Final = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _mutation(headers: Iterable[tuple[str, str]], remove: Iterable[str] = ()) -> pb.HeaderMutation:
    return pb.HeaderMutation(
        set_headers=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=k, raw_value=v.encode("latin-1")),
                append_action=_OVERWRITE,
            )
            for k, v in headers
        ],
        remove_headers=list(remove),
    )


def _struct(values: Mapping[str, Mapping[str, str]]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({ns: dict(fields) for ns, fields in values.items()})
    return struct


_EMPTY_RESPONSE_HEADERS: Final = pb.ProcessingResponse(
    response_headers=pb.HeadersResponse(response=pb.CommonResponse())
)
_REQUEST_TRAILERS: Final = pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
_RESPONSE_TRAILERS: Final = pb.ProcessingResponse(response_trailers=pb.TrailersResponse())


def _answer(
    kind: str,
    phase: str,
    message: pb.BodyResponse | pb.HeadersResponse,
    metadata: Mapping[str, Mapping[str, str]] | None,
) -> pb.ProcessingResponse:
    """The ProcessingResponse answering the ``<phase>_<kind>`` message, with its metadata."""
    response = pb.ProcessingResponse(**{f"{phase}_{kind}": message})
    if metadata:
        response.dynamic_metadata.CopyFrom(_struct(metadata))
    return response


def encode(action: Action) -> pb.ProcessingResponse:
    """The ProcessingResponse for an outbound action (not NeedDecision, which stays local)."""
    if isinstance(action, BodyChunk):
        common = pb.CommonResponse(
            body_mutation=pb.BodyMutation(
                streamed_response=pb.StreamedBodyResponse(
                    body=action.body, end_of_stream=action.end_of_stream
                )
            )
        )
        return _answer(
            "body", action.phase, pb.BodyResponse(response=common), action.dynamic_metadata
        )
    if isinstance(action, HeadersResponse):
        if action.phase == "response" and not action.set_headers:
            return _EMPTY_RESPONSE_HEADERS
        common = pb.CommonResponse(
            header_mutation=_mutation(action.set_headers, action.remove_headers),
            clear_route_cache=action.clear_route_cache,
        )
        headers = pb.HeadersResponse(response=common)
        return _answer("headers", action.phase, headers, action.dynamic_metadata)
    if isinstance(action, BodyResponse):
        common = pb.CommonResponse(clear_route_cache=action.clear_route_cache)
        if action.set_headers or action.remove_headers:
            common.header_mutation.CopyFrom(_mutation(action.set_headers, action.remove_headers))
        if action.body is not None:
            common.body_mutation.body = action.body
        return _answer(
            "body", action.phase, pb.BodyResponse(response=common), action.dynamic_metadata
        )
    if isinstance(action, TrailersResponse):
        return _REQUEST_TRAILERS if action.phase == "request" else _RESPONSE_TRAILERS
    if isinstance(action, ImmediateResponse):
        return pb.ProcessingResponse(
            immediate_response=pb.ImmediateResponse(
                status=http_status_pb2.HttpStatus(code=action.status),
                body=action.body,
                headers=_mutation(action.headers),
            )
        )
    raise TypeError(f"{type(action).__name__} is not sent to Envoy")


def decode_access_logs(message: als_pb2.StreamAccessLogsMessage) -> list[Ended]:
    """The ends of routed requests in one batch of HTTP access log entries. Entries without
    the router's exchange id (requests it did not route) are left out."""
    ended: list[Ended] = []
    for entry in message.http_logs.log_entry:
        exchange_id = entry.request.request_headers.get(EXCHANGE_ID)
        if not exchange_id:
            continue
        response = entry.response
        status = response.response_code.value if response.HasField("response_code") else 0
        ended.append(Ended(exchange_id, status or None, response.response_body_bytes))
    return ended
