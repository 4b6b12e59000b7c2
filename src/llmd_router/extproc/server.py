"""The gRPC servers: ext-proc (``:9002``) and standard gRPC health (``:9003``).

The ext-proc port also serves Envoy's access log service (``envoy.service.accesslog.v3``), by
which our buffered bootstrap reports the end of each routed request.

Health reports ``liveness`` SERVING while the process runs, and ``readiness``, the overall
service ``""`` and the ext-proc service name SERVING once the router is ready to route (it has
its endpoints), as llm-d's EPP does. With ``health_on_main`` the health service is also served on
the ext-proc port (llm-d's ``--health-checking``).

TLS (llm-d's ``--secure-serving``, on by default for ``llmd-router epp``) uses ``tls.crt`` and
``tls.key`` from ``cert_path``, or a self-signed certificate made at start-up.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from llmd_router.extproc.codec import SERVICE_NAME, add_access_log_to_server, add_to_server

if TYPE_CHECKING:
    from pathlib import Path

    from llmd_router.extproc.servicer import AccessLogServicer, ExtProcServicer

__all__ = ["ExtProcServer", "TlsConfig", "self_signed_certificate"]

_log = logging.getLogger(__name__)
_READY_SERVICES: Final = ("", "readiness", SERVICE_NAME)
_OPTIONS: Final = [
    ("grpc.so_reuseport", 0),  # a second router on the same port must fail, not share it
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_path: Path | None = None  # a directory with tls.crt and tls.key; None: self-signed


def self_signed_certificate(host: str = "localhost") -> tuple[bytes, bytes]:
    """A fresh (key, certificate) pair in PEM, valid for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    if tls.cert_path is None:
        key, cert = self_signed_certificate()
    else:
        try:
            key = (tls.cert_path / "tls.key").read_bytes()
            cert = (tls.cert_path / "tls.crt").read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read tls.crt/tls.key in {tls.cert_path}: {exc}") from None
    return grpc.ssl_server_credentials([(key, cert)])


class ExtProcServer:
    def __init__(
        self,
        servicer: ExtProcServicer,
        *,
        host: str = "0.0.0.0",
        port: int = 9002,
        health_port: int = 9003,
        tls: TlsConfig | None = None,
        health_on_main: bool = False,
        access_log: AccessLogServicer | None = None,
    ) -> None:
        self._servicer = servicer
        self._access_log = access_log
        self._host = host
        self._tls = tls
        self._health_on_main = health_on_main
        self._health = health_aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.port = port
        self.health_port = health_port

    async def start(self) -> None:
        """Bind both ports (0 picks a free one; a restart takes the same ones again) and start
        serving. Not ready until told."""
        await self._health.set("liveness", health_pb2.HealthCheckResponse.SERVING)
        await self.set_ready(ready=False)
        server = grpc.aio.server(options=_OPTIONS)
        add_to_server(self._servicer, server)
        if self._access_log is not None:
            self._access_log.open()
            add_access_log_to_server(self._access_log, server)
        if self._health_on_main:
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"{self._host}:{self.port}"  # after a restart: the port bound before
        if self._tls is not None:
            self.port = server.add_secure_port(address, _credentials(self._tls))
        else:
            self.port = server.add_insecure_port(address)
        health_server = grpc.aio.server(options=_OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, health_server)
        self.health_port = health_server.add_insecure_port(f"{self._host}:{self.health_port}")
        await server.start()
        await health_server.start()
        self._server, self._health_server = server, health_server

    async def set_ready(self, *, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in _READY_SERVICES:
            await self._health.set(service, status)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting streams; let open ones finish for up to ``grace`` seconds."""
        await self.set_ready(ready=False)
        if self._access_log is not None:
            self._access_log.close()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None
