"""The pool's endpoints: where they come from, their signals, and the work in flight to them."""

from llmd_router.datalayer.discovery import EndpointsError, load_endpoints_file, parse_endpoint_list
from llmd_router.datalayer.endpoints import (
    NO_METRICS,
    Endpoint,
    EndpointMetrics,
    Signals,
    host_port,
)
from llmd_router.datalayer.inflight import InFlightLedger
from llmd_router.datalayer.store import EndpointStore

__all__ = [
    "NO_METRICS",
    "Endpoint",
    "EndpointMetrics",
    "EndpointStore",
    "EndpointsError",
    "InFlightLedger",
    "Signals",
    "host_port",
    "load_endpoints_file",
    "parse_endpoint_list",
]
