"""Waiting for something the system does on its own schedule (a poll, a reload, a restart)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Return once ``condition()`` holds; TimeoutError if it does not within ``within`` s."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  polling is the point: nothing signals
            await asyncio.sleep(0.01)
