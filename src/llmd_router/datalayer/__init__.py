"""The pool's endpoints, where they come from, and (later) their live signals."""

from llmd_router.datalayer.discovery import EndpointsError, load_endpoints_file, parse_endpoint_list
from llmd_router.datalayer.endpoints import (
    NO_METRICS,
    Endpoint,
    EndpointMetrics,
    EndpointStore,
    host_port,
)

__all__ = [
    "NO_METRICS",
    "Endpoint",
    "EndpointMetrics",
    "EndpointStore",
    "EndpointsError",
    "host_port",
    "load_endpoints_file",
    "parse_endpoint_list",
]
