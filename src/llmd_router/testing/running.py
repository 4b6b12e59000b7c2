"""Running router parts for a test: a task owner, router options on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from llmd_router.app.options import RouterOptions
from llmd_router.tasks import TaskOwner

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["local_options", "task_owner"]


@contextlib.asynccontextmanager
async def task_owner(**options: Any) -> AsyncIterator[TaskOwner]:
    """A task owner for the length of the block (its loops are stopped at the end);
    ``options`` are ``TaskOwner``'s (``on_given_up``, ``max_failures``, ...)."""
    async with asyncio.TaskGroup() as group:
        owner = TaskOwner(group, **options)
        try:
            yield owner
        finally:
            await owner.close()


def local_options(**overrides: Any) -> RouterOptions:
    """A router's options for a test: loopback only, free ports, plaintext gRPC."""
    defaults: dict[str, Any] = {
        "host": "127.0.0.1",
        "grpc_port": 0,
        "health_port": 0,
        "metrics_port": 0,
        "secure_serving": False,
    }
    return RouterOptions(**{**defaults, **overrides})
