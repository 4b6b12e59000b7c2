"""The least an ext-proc server can do behind our buffered bootstrap: the floor under the router.

It answers every message Envoy sends with the empty response the protocol requires, except the
request body, which it answers with the one header mutation that routes: the destination
endpoint, fixed on the command line. No parsing, no scheduling, no metrics. The transport
(grpc.aio on uvloop, protobuf objects) is the router's, so the difference between the two in one
benchmark run is what the router's own work costs.

    python -m llmd_bench.null_extproc --port 9002 --endpoint 127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TYPE_CHECKING, Any

import grpc
import uvloop
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from llmd_router.headers import DESTINATION

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["NullProcessor", "serve"]


def _responses(endpoint: str) -> dict[str, pb.ProcessingResponse]:
    route = pb.CommonResponse(
        header_mutation=pb.HeaderMutation(
            set_headers=[
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=DESTINATION, raw_value=endpoint.encode())
                )
            ]
        ),
        clear_route_cache=True,
    )
    return {
        "request_headers": pb.ProcessingResponse(request_headers=pb.HeadersResponse()),
        "request_body": pb.ProcessingResponse(request_body=pb.BodyResponse(response=route)),
        "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
        "response_headers": pb.ProcessingResponse(response_headers=pb.HeadersResponse()),
        "response_body": pb.ProcessingResponse(response_body=pb.BodyResponse()),
        "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
    }


class NullProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, endpoint: str) -> None:
        self._answers = _responses(endpoint)

    async def Process(  # the gRPC method name
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: Any,
    ) -> AsyncIterator[pb.ProcessingResponse]:
        async for message in request_iterator:
            kind = message.WhichOneof("request")
            yield self._answers[kind]
            if kind == "response_trailers":
                return


async def serve(port: int, endpoint: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(NullProcessor(endpoint), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--endpoint", required=True, help="host:port every request goes to")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.endpoint))


if __name__ == "__main__":
    main()
