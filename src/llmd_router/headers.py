"""Header and metadata names of the Endpoint Picker Protocol and llm-d, current and legacy.

llm-d renamed its control headers from ``x-gateway-*`` to ``x-llm-d-*`` in 2026; both are read,
the current name first. Request header keys are lower-cased before lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CONTENT_LENGTH",
    "DEBUG",
    "DECISION",
    "DESTINATION",
    "DESTINATION_SERVED",
    "DESTINATION_SUBSET",
    "EXCHANGE_ID",
    "FAIRNESS_ID",
    "LB_NAMESPACE",
    "MODEL_REWRITE",
    "OBJECTIVE",
    "REQUEST_ID",
    "RESPONSE_HEADERS",
    "RESPONSE_HEADERS_NAMESPACE",
    "SESSION_TOKEN",
    "SLO_TTFT_MS",
    "SUBSET_NAMESPACE",
    "SYSTEM_OWNED",
    "control_header",
]

REQUEST_ID: Final = "x-request-id"
CONTENT_LENGTH: Final = "content-length"

# The routing decision: a request header and the same value in dynamic metadata.
DESTINATION: Final = "x-gateway-destination-endpoint"
LB_NAMESPACE: Final = "envoy.lb"
# From the proxy: the candidate subset (request) and the endpoint that served (response).
SUBSET_NAMESPACE: Final = "envoy.lb.subset_hint"
DESTINATION_SUBSET: Final = "x-gateway-destination-endpoint-subset"
DESTINATION_SERVED: Final = "x-gateway-destination-endpoint-served"

# Ours: set by the router on a routed request so that Envoy's access log entry for it can be
# matched to the request (when the access log, not the ext-proc stream, says a request ended).
EXCHANGE_ID: Final = "x-llmd-exchange-id"

# Response headers the router sets for the client. Where the response does not pass through the
# router (our buffered bootstrap), the router puts them in dynamic metadata under this namespace
# and Envoy's route copies each named one onto the response.
RESPONSE_HEADERS_NAMESPACE: Final = "llmd.response_headers"
SESSION_TOKEN: Final = "x-session-token"  # noqa: S105  a header name
DECISION: Final = "x-llmd-decision"  # an explanation of the routing decision, on request
RESPONSE_HEADERS: Final = (SESSION_TOKEN, DECISION)
DEBUG: Final = "x-llmd-debug"  # "1" asks for the explanation (when the router allows it)

# Control headers: (current name, legacy name).
OBJECTIVE: Final = ("x-llm-d-inference-objective", "x-gateway-inference-objective")
FAIRNESS_ID: Final = ("x-llm-d-inference-fairness-id", "x-gateway-inference-fairness-id")
MODEL_REWRITE: Final = ("x-llm-d-model-name-rewrite", "x-gateway-model-name-rewrite")
SLO_TTFT_MS: Final = ("x-llm-d-slo-ttft-ms", "x-slo-ttft-ms")

# Headers the router owns: never copied from the client to the upstream by the router.
SYSTEM_OWNED: Final = frozenset(
    {
        *OBJECTIVE,
        *FAIRNESS_ID,
        *MODEL_REWRITE,
        DESTINATION,
        DESTINATION_SUBSET,
        DESTINATION_SERVED,
        EXCHANGE_ID,
        CONTENT_LENGTH,
        "x-llm-d-request-dropped-reason",
    }
)


def control_header(headers: Mapping[str, str], names: tuple[str, str]) -> str | None:
    """The value of a control header by its current name, else its legacy name."""
    value = headers.get(names[0])
    if value is None:
        value = headers.get(names[1])
    return value or None
