"""Running our command lines the way a user does, as child processes with their output piped."""

from __future__ import annotations

import asyncio
import os
import sys


async def start_module(module: str, *args: str) -> asyncio.subprocess.Process:
    """``python -m MODULE ARGS``, unbuffered, with stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
