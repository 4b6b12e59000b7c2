"""Endpoints without Kubernetes: a ``host:port`` list, or llm-d's endpoints file.

The endpoints-file format is llm-d's (``docs/discovery.md``)::

    endpoints:
      - name: vllm-0          # required; namespace/name identifies the endpoint
        namespace: default    # optional
        address: "10.0.0.1"   # required: an IP address (Envoy routes to it directly)
        port: "8000"          # required: 1-65535, as a string or a number
        labels: {model: llama-3-8b}

Unlike llm-d's loader, IPv6 addresses are accepted, and a bad entry does not stop the others:
``load_endpoints_file`` returns the valid endpoints together with one message per rejected
entry, and the caller decides whether that is fatal (at start-up) or only logged (on reload).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, Final

import yaml

from llmd_router.datalayer.endpoints import Endpoint

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["EndpointsError", "load_endpoints_file", "parse_endpoint_list"]

_MAX_FILE_BYTES: Final = 1 << 20


class EndpointsError(ValueError):
    """An endpoint list or file cannot be used at all."""


def _address(value: object) -> str:
    if value == "localhost":
        return "127.0.0.1"
    if not isinstance(value, str):
        raise ValueError(f"address must be a string, got {value!r}")
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise ValueError(
            f"address {value!r} is not an IP address (Envoy routes to endpoints "
            "by address, so names cannot be used)"
        ) from None


def _port(value: object) -> int:
    text = (
        str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    )
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, got {value!r}")
    return int(text)


def parse_endpoint_list(spec: str) -> list[Endpoint]:
    """``host:port[,host:port...]`` (IPv6 as ``[addr]:port``). Raises EndpointsError."""
    endpoints: list[Endpoint] = []
    for index, item in enumerate(p.strip() for p in spec.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            raise EndpointsError(f"endpoint {item!r}: expected host:port")
        try:
            endpoints.append(
                Endpoint(name=f"endpoint-{index}", address=_address(host), port=_port(port))
            )
        except ValueError as exc:
            raise EndpointsError(f"endpoint {item!r}: {exc}") from None
    if not endpoints:
        raise EndpointsError("no endpoints given")
    return endpoints


def _entry(raw: Any) -> Endpoint:
    if not isinstance(raw, dict):
        raise ValueError("expected a mapping with name, address and port")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("name is required")
    namespace = raw.get("namespace") or "default"
    labels = raw.get("labels") or {}
    if not isinstance(namespace, str):
        raise ValueError(f"namespace must be a string, got {namespace!r}")
    if not isinstance(labels, dict):
        raise ValueError(f"labels must be a mapping, got {labels!r}")
    return Endpoint(
        name=name,
        namespace=namespace,
        address=_address(raw.get("address")),
        port=_port(raw.get("port")),
        labels={str(k): str(v) for k, v in labels.items()},
    )


def load_endpoints_file(path: Path) -> tuple[list[Endpoint], list[str]]:
    """The valid endpoints of a file, and a message for each entry that was rejected.

    Raises EndpointsError when the file itself cannot be read or parsed."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise EndpointsError(f"cannot read endpoints file {path}: {exc}") from None
    if len(data) > _MAX_FILE_BYTES:
        raise EndpointsError(f"endpoints file {path} exceeds the 1 MiB limit")
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise EndpointsError(f"endpoints file {path} is not valid YAML or JSON: {exc}") from None
    if document is None:
        document = {"endpoints": []}
    if not isinstance(document, dict) or not isinstance(document.get("endpoints", []), list):
        raise EndpointsError(f"endpoints file {path}: expected a mapping with an 'endpoints' list")
    endpoints: dict[str, Endpoint] = {}
    errors: list[str] = []
    for index, raw in enumerate(document.get("endpoints") or []):
        try:
            endpoint = _entry(raw)
        except ValueError as exc:
            errors.append(f"{path}: endpoints[{index}]: {exc}")
            continue
        if endpoint.id in endpoints:
            errors.append(
                f"{path}: endpoints[{index}]: {endpoint.id} is listed again; the last entry wins"
            )
        endpoints[endpoint.id] = endpoint
    return list(endpoints.values()), errors
