"""Endpoints without Kubernetes: a ``host:port`` list, or llm-d's endpoints file.

The endpoints-file format is llm-d's (``docs/discovery.md``)::

    endpoints:
      - name: vllm-0          # required; namespace/name identifies the endpoint
        namespace: default    # optional
        address: "10.0.0.1"   # required: an IP address (Envoy routes to it directly)
        port: "8000"          # required: 1-65535, as a string or a number
        labels: {model: llama-3-8b}

Unlike llm-d's loader, IPv6 addresses are accepted, and a bad entry never stops the others, at
start-up or on reload: it is logged and skipped.

``FileDiscovery`` watches the file (polling ``stat``, which survives editors' write-and-rename and
Kubernetes' ConfigMap symlink swaps) and applies each new version as a difference: new ids are
added, changed ones updated, missing ones deleted. What it never does is lose a good endpoint to
a bad edit:

- a file that cannot be read or parsed, or is empty (zero bytes: caught mid-write), changes
  nothing;
- an entry that became invalid keeps its last good version (its id is still readable);
- if an invalid entry has no readable id, no endpoint is deleted by that version, since the
  entry might be any of them.

Only an unreadable file at start-up is fatal.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import yaml

from llmd_router.config.watch import fingerprint, watch_file
from llmd_router.datalayer.endpoints import Endpoint

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from llmd_router.datalayer.interfaces import DiscoverySink

__all__ = [
    "EndpointsError",
    "EndpointsFile",
    "FileDiscovery",
    "StaticDiscovery",
    "load_endpoints_file",
    "parse_endpoint_list",
]

_log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class EndpointsFile:
    """One reading of an endpoints file."""

    endpoints: tuple[Endpoint, ...]  # the valid entries (the last one of a repeated id)
    errors: tuple[str, ...]  # one message per rejected entry
    invalid_ids: frozenset[str] = frozenset()  # ids of rejected entries that have one
    unidentified: bool = False  # some rejected entry has no readable id


def _entry_id(raw: Any) -> str | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        return None
    namespace = raw.get("namespace") or "default"
    return f"{namespace}/{raw['name']}" if isinstance(namespace, str) else None


def load_endpoints_file(path: Path) -> EndpointsFile:
    """The file's valid endpoints and what was wrong with the others.

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
    invalid: set[str] = set()
    unidentified = False
    for index, raw in enumerate(document.get("endpoints") or []):
        try:
            endpoint = _entry(raw)
        except ValueError as exc:
            errors.append(f"{path}: endpoints[{index}]: {exc}")
            entry_id = _entry_id(raw)
            if entry_id is None:
                unidentified = True
            else:
                invalid.add(entry_id)
            continue
        if endpoint.id in endpoints:
            errors.append(
                f"{path}: endpoints[{index}]: {endpoint.id} is listed again; the last entry wins"
            )
        endpoints[endpoint.id] = endpoint
    return EndpointsFile(
        tuple(endpoints.values()),
        tuple(errors),
        frozenset(invalid - endpoints.keys()),
        unidentified,
    )


class StaticDiscovery:
    """A fixed list of endpoints (``--endpoints``)."""

    name = "static"

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)

    async def run(self, sink: DiscoverySink) -> None:
        for endpoint in self.endpoints:
            sink.upsert(endpoint)
        sink.synced()
        await asyncio.Event().wait()  # nothing changes; run until cancelled


class FileDiscovery:
    """Endpoints from llm-d's endpoints file, optionally watched for changes."""

    def __init__(
        self, path: Path, *, watch: bool = True, poll_s: float = 0.25, name: str = "file"
    ) -> None:
        self.name = name
        self.path = path
        self.watch = watch
        self.poll_s = poll_s
        self._known: dict[str, Endpoint] = {}  # what the sink was last told, by id
        self.reloads = 0
        self.rejected_reloads = 0

    def initial(self) -> EndpointsFile:
        """Read the file once (the CLI calls this before starting, to fail early).
        EndpointsError when it cannot be read."""
        return load_endpoints_file(self.path)

    async def run(self, sink: DiscoverySink) -> None:
        seen = fingerprint(self.path)  # before reading, so no later change is missed
        loaded = load_endpoints_file(self.path)  # EndpointsError: fatal at start-up
        self._apply(loaded, sink)
        sink.synced()
        if not self.watch:
            await asyncio.Event().wait()
        await watch_file(self.path, lambda: self._reload(sink), interval_s=self.poll_s, seen=seen)

    def _reload(self, sink: DiscoverySink) -> None:
        self.reloads += 1
        try:
            if self.path.stat().st_size == 0:
                self.rejected_reloads += 1
                _log.warning(
                    "endpoints file %s is empty; keeping the current endpoints "
                    "(write endpoints: [] to remove them all)",
                    self.path,
                )
                return
            loaded = load_endpoints_file(self.path)
        except (EndpointsError, OSError) as exc:
            self.rejected_reloads += 1
            _log.error("endpoints file not reloaded, the current endpoints stay: %s", exc)
            return
        self._apply(loaded, sink)

    def _apply(self, loaded: EndpointsFile, sink: DiscoverySink) -> None:
        for error in loaded.errors:
            _log.error("endpoint skipped: %s", error)
        fresh = {e.id: e for e in loaded.endpoints}
        gone = [i for i in self._known if i not in fresh]
        kept = [i for i in gone if i in loaded.invalid_ids]
        if kept:
            _log.warning(
                "endpoints %s are invalid in the new file; their last good version stays",
                ", ".join(kept),
            )
        gone = [i for i in gone if i not in loaded.invalid_ids]
        if gone and loaded.unidentified:
            _log.warning(
                "endpoints %s are not in %s, but an entry without a readable name might be "
                "one of them: nothing is removed until the file is fixed",
                ", ".join(gone),
                self.path,
            )
            gone = []
        for endpoint_id in gone:
            sink.delete(endpoint_id)
            del self._known[endpoint_id]
        for endpoint_id, endpoint in fresh.items():
            old = self._known.get(endpoint_id)
            if old is not None and _same(old, endpoint):
                continue
            sink.upsert(endpoint)
            self._known[endpoint_id] = endpoint
        _log.info("endpoints file %s: %d endpoints", self.path, len(self._known))


def _same(a: Endpoint, b: Endpoint) -> bool:
    return (a.name, a.namespace, a.address, a.port, dict(a.labels)) == (
        b.name,
        b.namespace,
        b.address,
        b.port,
        dict(b.labels),
    )
