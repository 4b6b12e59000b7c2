"""The Envoy bootstrap of Standalone Mode, as a pure function of a ProxyConfig.

The data plane::

    listener :8081 (HTTP/1.1 and h2c)
      early header mutation: drop every client header starting x-gateway-destination-endpoint,
                             and x-llmd-exchange-id, so no client can choose its upstream or
                             touch the router's accounting, whatever happens next
      ext_proc  -> cluster "epp" (gRPC over HTTP/2, TLS optional)
      router
        route 1: x-gateway-destination-endpoint present -> cluster "original_destination"
                 (ORIGINAL_DST: connect to the ip:port the router put in that header)
        route 2: otherwise -> fail-open: cluster "pool" (a random endpoint of the pool)
                              fail-closed: 503
      access log (buffered mode) -> the router's AccessLogService, on the same cluster "epp"
    admin on 127.0.0.1

ext_proc sets ``clear_route_cache`` with the destination header, so the route is chosen again
after routing and matches route 1. The client's own header is gone before any of this.

Processing modes (``ProxyConfig.mode``):

- ``buffered`` (ours, the default): request headers SEND, request body BUFFERED, and the whole
  response path off (headers SKIP, body NONE, trailers SKIP). One message carries the whole
  body; the routing decision rides on its answer; the response never passes through the router.
  Envoy's gRPC access log tells the router when each routed request ended and with which
  status: an entry per request that carries the router's ``x-llmd-exchange-id``, batched on
  one long-lived stream and flushed every ``access_log_flush_s``. Token usage is not seen.
  Envoy holds up to ``max_request_bytes`` of a request body.
- ``full-duplex``: llm-d's setting, FULL_DUPLEX_STREAMED bodies both ways with trailers SEND;
  every response chunk passes through the router (usage is read from it).

Failure mode: ``closed`` (llm-d's default) answers 503 when the router cannot be reached;
``open`` lets the request through to a random endpoint of the pool. Envoy can only do that
before the request body has reached the router, which holds in ``buffered`` mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from llmd_router.headers import (
    DESTINATION,
    EXCHANGE_ID,
    LB_NAMESPACE,
    RESPONSE_HEADERS,
    RESPONSE_HEADERS_NAMESPACE,
)

__all__ = ["Mode", "ProxyConfig", "build_bootstrap"]

Mode = Literal["buffered", "full-duplex"]
FailureMode = Literal["open", "closed"]

_MODES: Final[dict[str, dict[str, str]]] = {
    "buffered": {
        "request_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "request_trailer_mode": "SKIP",
        "response_header_mode": "SKIP",
        "response_body_mode": "NONE",
        "response_trailer_mode": "SKIP",
    },
    "full-duplex": {
        "request_header_mode": "SEND",
        "request_body_mode": "FULL_DUPLEX_STREAMED",
        "request_trailer_mode": "SEND",
        "response_header_mode": "SEND",
        "response_body_mode": "FULL_DUPLEX_STREAMED",
        "response_trailer_mode": "SEND",
    },
}
_HCM: Final = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_EXT_PROC: Final = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_ROUTER: Final = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_EARLY_MUTATION: Final = (
    "type.googleapis.com/envoy.extensions.http.early_header_mutation."
    "header_mutation.v3.HeaderMutation"
)
_GRPC_ACCESS_LOG: Final = (
    "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
)
_ACCESS_LOG_NAME: Final = "llmd-router"
_HTTP_OPTIONS: Final = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_CONNECTIONS: Final = (
    "type.googleapis.com/envoy.extensions.resource_monitors."
    "downstream_connections.v3.DownstreamConnectionsConfig"
)
_NO_LIMITS: Final = {
    "thresholds": [
        {
            "max_connections": 100000,
            "max_pending_requests": 100000,
            "max_requests": 100000,
            "max_retries": 100,
        }
    ]
}


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    listen_host: str = "0.0.0.0"
    listen_port: int = 8081
    admin_host: str = "127.0.0.1"
    admin_port: int = 19000
    epp_host: str = "127.0.0.1"
    epp_port: int = 9002
    epp_tls: bool = False
    mode: Mode = "buffered"
    failure_mode: FailureMode = "closed"
    pool: tuple[tuple[str, int], ...] = ()
    max_request_bytes: int = 32 << 20
    max_connections: int = 50_000
    decision_timeout_s: float = 60.0
    idle_timeout_s: float = 300.0
    access_log_flush_s: float = 0.01  # buffered mode: how late the router may learn of an end


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _endpoints(name: str, hosts: tuple[tuple[str, int], ...]) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": _address(host, port)}} for host, port in hosts
                ]
            }
        ],
    }


def _ext_proc(config: ProxyConfig) -> dict[str, Any]:
    typed: dict[str, Any] = {
        "@type": _EXT_PROC,
        "grpc_service": {
            "envoy_grpc": {"cluster_name": "epp"},
            "timeout": f"{config.decision_timeout_s:g}s",
        },
        "processing_mode": dict(_MODES[config.mode]),
        "message_timeout": f"{config.decision_timeout_s:g}s",
        "failure_mode_allow": config.failure_mode == "open",
        # Envoy drops the metadata a processor returns unless its namespace is listed here.
        "metadata_options": {
            "receiving_namespaces": {"untyped": [LB_NAMESPACE, RESPONSE_HEADERS_NAMESPACE]}
        },
    }
    if config.failure_mode == "closed":
        typed["status_on_error"] = {"code": 503}
    return {"name": "envoy.filters.http.ext_proc", "typed_config": typed}


def _access_log(config: ProxyConfig) -> dict[str, Any]:
    """Envoy's gRPC access log to the router, for the requests the router routed."""
    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": {"header_filter": {"header": {"name": EXCHANGE_ID, "present_match": True}}},
        "typed_config": {
            "@type": _GRPC_ACCESS_LOG,
            "common_config": {
                "log_name": _ACCESS_LOG_NAME,
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}},
                "buffer_flush_interval": f"{config.access_log_flush_s:g}s",
            },
            "additional_request_headers_to_log": [EXCHANGE_ID],
        },
    }


def _routes(config: ProxyConfig) -> list[dict[str, Any]]:
    routed = {
        "cluster": "original_destination",
        "timeout": "0s",
        "idle_timeout": f"{config.idle_timeout_s:g}s",
    }
    fallback: dict[str, Any]
    if config.failure_mode == "open":
        fallback = {"match": {"prefix": "/"}, "route": {**routed, "cluster": "pool"}}
    else:
        fallback = {
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 503,
                "body": {
                    "inline_string": "inference error: ServiceUnavailable - "
                    "the request was not routed\n"
                },
            },
        }
    return [
        {
            "match": {"prefix": "/", "headers": [{"name": DESTINATION, "present_match": True}]},
            "route": routed,
            "response_headers_to_add": _client_headers(),
        },
        fallback,
    ]


def _client_headers() -> list[dict[str, Any]]:
    """Response headers the router chose for the client (a session token, an explanation),
    copied from the dynamic metadata it set; absent when it set none."""
    return [
        {
            "header": {
                "key": name,
                "value": f"%DYNAMIC_METADATA({RESPONSE_HEADERS_NAMESPACE}:{name})%",
            },
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            "keep_empty_value": False,
        }
        for name in RESPONSE_HEADERS
    ]


def _epp_cluster(config: ProxyConfig) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": "epp",
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "circuit_breakers": _NO_LIMITS,
        "load_assignment": _endpoints("epp", ((config.epp_host, config.epp_port),)),
    }
    if config.epp_tls:
        # The router's certificate may be self-signed: encrypt, do not verify.
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _TLS,
                "sni": "localhost",
                "common_tls_context": {"alpn_protocols": ["h2"]},
            },
        }
    return cluster


def build_bootstrap(config: ProxyConfig) -> dict[str, Any]:
    """The bootstrap document (serialise it as YAML or JSON for ``envoy -c``)."""
    return {
        "admin": {"address": _address(config.admin_host, config.admin_port)},
        "overload_manager": _overload_manager(config),
        "static_resources": {
            "listeners": [_listener(config)],
            "clusters": _clusters(config),
        },
    }


def _overload_manager(config: ProxyConfig) -> dict[str, Any]:
    return {
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": _CONNECTIONS,
                    "max_active_downstream_connections": config.max_connections,
                },
            }
        ]
    }


def _listener(config: ProxyConfig) -> dict[str, Any]:
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": _http_connection_manager(config),
    }
    return {
        "name": "inference",
        "address": _address(config.listen_host, config.listen_port),
        "per_connection_buffer_limit_bytes": config.max_request_bytes,
        "filter_chains": [{"filters": [hcm]}],
    }


def _http_connection_manager(config: ProxyConfig) -> dict[str, Any]:
    hcm = {
        "@type": _HCM,
        "stat_prefix": "inference",
        "codec_type": "AUTO",
        "stream_idle_timeout": f"{config.idle_timeout_s:g}s",
        "early_header_mutation_extensions": [_strip_routing_headers()],
        "route_config": {
            "name": "inference",
            "virtual_hosts": [{"name": "inference", "domains": ["*"], "routes": _routes(config)}],
        },
        "http_filters": [
            _ext_proc(config),
            {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}},
        ],
    }
    if config.mode == "buffered":
        hcm["access_log"] = [_access_log(config)]
    return hcm


def _strip_routing_headers() -> dict[str, Any]:
    """A client's own destination or exchange-id headers are removed before anything reads
    them, in both failure modes."""
    return {
        "name": "envoy.http.early_header_mutation.header_mutation",
        "typed_config": {
            "@type": _EARLY_MUTATION,
            "mutations": [
                {"remove_on_match": {"key_matcher": {"prefix": name, "ignore_case": True}}}
                for name in (DESTINATION, EXCHANGE_ID)
            ],
        },
    }


def _clusters(config: ProxyConfig) -> list[dict[str, Any]]:
    clusters = [
        _epp_cluster(config),
        {
            "name": "original_destination",
            "type": "ORIGINAL_DST",
            "connect_timeout": "5s",
            "lb_policy": "CLUSTER_PROVIDED",
            "circuit_breakers": _NO_LIMITS,
            "original_dst_lb_config": {"use_http_header": True, "http_header_name": DESTINATION},
        },
    ]
    if config.failure_mode == "open":
        clusters.append(
            {
                "name": "pool",
                "type": "STATIC",
                "connect_timeout": "5s",
                "lb_policy": "RANDOM",
                "circuit_breakers": _NO_LIMITS,
                "load_assignment": _endpoints("pool", config.pool),
            }
        )
    return clusters
