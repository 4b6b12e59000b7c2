"""The Envoy supervisor with the real binary: start, restart, give up, never orphan Envoy."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from typing import TYPE_CHECKING

import httpx
import pytest

from llmd_router.proxy.bootstrap import ProxyConfig, build_bootstrap
from llmd_router.proxy.supervisor import EnvoyError, EnvoyProcess

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.slow


def bootstrap() -> dict:
    # No router behind it: fail-closed, so every request gets Envoy's own 503.
    return build_bootstrap(ProxyConfig(listen_host="127.0.0.1", listen_port=0, admin_port=0))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


async def until(condition: Callable[[], bool], within: float = 20.0) -> bool:
    async with asyncio.timeout(within):
        while True:
            if condition():
                return True
            await asyncio.sleep(0.05)


async def gone(pid: int) -> bool:
    return await until(lambda: not alive(pid))


async def keep_killing(envoy: EnvoyProcess, supervisor: asyncio.Future[None]) -> None:
    """SIGKILL Envoy each time it is back up, until the supervisor stops restarting it."""
    async with asyncio.timeout(60):
        while not supervisor.done():
            pid = envoy.pid
            if pid is not None and alive(pid) and envoy.listener_port:
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.05)
    supervisor.result()


async def test_start_reports_the_listener_and_stop_ends_envoy():
    envoy = EnvoyProcess(bootstrap())
    await envoy.start()
    pid = envoy.pid
    try:
        assert envoy.listener_port > 0
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"http://127.0.0.1:{envoy.listener_port}/v1/completions")
        assert answer.status_code == 503  # the route Envoy answers itself with no router
    finally:
        await envoy.stop()
    assert pid is not None and await gone(pid)


async def test_an_invalid_bootstrap_fails_start_with_envoys_reason():
    broken = bootstrap()
    broken["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    envoy = EnvoyProcess(broken)
    with pytest.raises(EnvoyError, match="NOT_A_TYPE"):
        await envoy.start()
    await envoy.stop()


async def test_envoy_that_dies_is_restarted_then_given_up_on():
    envoy = EnvoyProcess(bootstrap(), max_restarts=2, restart_window=60)
    await envoy.start()
    supervisor = asyncio.ensure_future(envoy.run())
    try:
        first = envoy.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: envoy.pid != first and envoy.listener_port > 0)
        assert envoy.restarts == 1
        # Keep killing it: after max_restarts deaths in the window, run() gives up.
        with pytest.raises(EnvoyError, match="giving up"):
            await keep_killing(envoy, supervisor)
    finally:
        supervisor.cancel()
        await envoy.stop()


async def test_envoy_exits_when_the_router_process_is_killed(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent("""
            import asyncio, sys
            from llmd_router.proxy.bootstrap import ProxyConfig, build_bootstrap
            from llmd_router.proxy.supervisor import EnvoyProcess

            async def main():
                config = ProxyConfig(listen_host="127.0.0.1", listen_port=0, admin_port=0)
                envoy = EnvoyProcess(build_bootstrap(config))
                await envoy.start()
                print(envoy.pid, flush=True)
                await asyncio.sleep(3600)

            asyncio.run(main())
        """)
    )
    owner = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    assert owner.stdout is not None
    async with asyncio.timeout(30):
        envoy_pid = int(await owner.stdout.readline())
    assert alive(envoy_pid)
    owner.kill()  # SIGKILL: no chance to stop Envoy itself
    await owner.wait()
    assert await gone(envoy_pid)
