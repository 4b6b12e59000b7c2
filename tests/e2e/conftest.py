"""A whole Standalone stack per test: simulated vLLM servers, the router, a real Envoy."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pytest
import yaml

from llmd_router.app import EnvoyOptions, Standalone
from llmd_router.datalayer import Endpoint
from llmd_router.proxy.bootstrap import ProxyConfig
from llmd_router.testing import local_options
from llmd_sim.config import build_fleet
from llmd_sim.fleet import Fleet

if TYPE_CHECKING:
    from pathlib import Path

MODEL = "sim-tiny"


@dataclass
class Stack:
    fleet: Fleet
    app: Standalone

    @property
    def url(self) -> str:
        return self.app.url

    def served(self) -> list[int]:
        """Requests each simulated server finished (any finish reason)."""
        return [sum(s.engine.statistics().finished.values()) for s in self.fleet.servers]


StartStack = Callable[..., Awaitable[Stack]]


def write_endpoints(path: Path, fleet: Fleet, count: int | None = None, skip: int = 0) -> None:
    """The fleet's servers ``skip`` .. ``skip + count`` in llm-d's endpoints file, written the
    way editors write (a new file renamed over the old one)."""
    document = fleet.endpoints_document()
    end = None if count is None else skip + count
    document["endpoints"] = document["endpoints"][skip:end]
    temp = path.with_suffix(".tmp")
    temp.write_text(yaml.safe_dump(document))
    os.replace(temp, path)


@pytest.fixture
async def start_stack() -> AsyncIterator[StartStack]:
    started: list[Stack] = []

    async def start(
        *,
        servers: int = 3,
        mode: Literal["buffered", "full-duplex"] = "buffered",
        failure_mode: Literal["open", "closed"] = "closed",
        router: dict[str, Any] | None = None,
        proxy: dict[str, Any] | None = None,
        sim: dict[str, Any] | None = None,
        endpoints_file: Path | None = None,
        listed: int | None = None,
    ) -> Stack:
        """``endpoints_file``: discover the servers from that file (the first ``listed`` of
        them written to it) instead of a fixed list."""
        fleet = Fleet(
            build_fleet(
                overrides={"preset": "tiny", "time-scale": 0.2, **(sim or {})},
                count=servers,
                base_port=0,
            )
        )
        await fleet.start()
        endpoints = tuple(Endpoint(f"sim-{s.index}", "127.0.0.1", s.port) for s in fleet.servers)
        if endpoints_file is not None:
            write_endpoints(endpoints_file, fleet, listed)
            endpoints = ()
        app = Standalone(
            local_options(endpoints=endpoints, endpoints_file=endpoints_file, **(router or {})),
            EnvoyOptions(
                proxy=ProxyConfig(
                    listen_host="127.0.0.1",
                    listen_port=0,
                    admin_port=0,
                    mode=mode,
                    failure_mode=failure_mode,
                    **(proxy or {}),
                )
            ),
        )
        try:
            await app.start()
        except BaseException:
            await fleet.close()
            raise
        stack = Stack(fleet, app)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        await stack.app.stop(0)
        await stack.fleet.close()
