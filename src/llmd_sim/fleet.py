"""Many simulated servers in one process and one event loop.

Each server keeps its own engine, KV cache, metrics and KV-event socket; they share the event loop
and a ZMQ context. A server costs one listening socket and, while it has work, one timer, so a
fleet of dozens fits on two cores (``docs/benchmarks.md`` has the measured cost).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zmq

from llmd_sim.server import SimServer

if TYPE_CHECKING:
    from llmd_sim.config import FleetConfig

__all__ = ["Fleet"]

ROLE_LABEL = "llm-d.ai/role"


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self._zmq: zmq.Context[Any] = zmq.Context()
        self.servers = [
            SimServer(c, index=i, zmq_context=self._zmq) for i, c in enumerate(config.servers)
        ]

    async def start(self) -> None:
        """Start every server; on failure, stop those already started and re-raise."""
        started: list[SimServer] = []
        try:
            for server in self.servers:
                await server.start()
                started.append(server)
        except BaseException:
            for server in started:
                await server.close()
            raise

    async def close(self) -> None:
        for server in self.servers:
            await server.close()
        self._zmq.term()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def endpoints_document(self) -> dict[str, Any]:
        """The fleet in llm-d's endpoints-file format, for the router's file discovery."""
        entries = []
        for server in self.servers:
            c = server.config
            labels = dict(c.labels)
            if c.role:
                labels.setdefault(ROLE_LABEL, c.role)
            entry: dict[str, Any] = {
                "name": f"sim-{server.index}",
                "address": "127.0.0.1" if c.host in {"0.0.0.0", "", "localhost"} else c.host,
                "port": str(server.port),
            }
            if labels:
                entry["labels"] = labels
            entries.append(entry)
        return {"endpoints": entries}
