"""A real vLLM (the CPU wheel, installed by ``scripts/install-vllm``) serving a tiny Llama.

The model is ``tests/data/tiny-llama``: a config and a tokenizer, with random weights
(``--load-format dummy``), so nothing is downloaded. Start-up takes 25 to 70 s on two cores.

    with RealVllm() as vllm:
        httpx.get(f"{vllm.url}/metrics")

``async with RealVllm()`` works too (start and stop run in a thread). The server runs in its own
process group, so stopping it also ends vLLM's EngineCore process. Its output goes to a temporary
file, not a pipe: an unread pipe fills up and blocks vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

import httpx
import psutil

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "tests" / "data" / "tiny-llama"
MODEL_NAME = "tiny"
BLOCK_SIZE = 32  # on CPU the block size must be a multiple of 32
START_TIMEOUT = 240.0
STOP_GRACE = 20.0

# Variables of the calling (dev) virtualenv that must not leak into vLLM's interpreter.
_ENV_DROPPED = ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")


def vllm_python() -> Path | None:
    """The interpreter of the vLLM virtualenv: ``$LLMD_VLLM_PYTHON`` or ``<repo>/.venv-vllm``.

    None when it does not exist (``scripts/install-vllm`` was not run).
    """
    configured = os.environ.get("LLMD_VLLM_PYTHON")
    candidates = [Path(configured)] if configured else []
    candidates.append(REPO / ".venv-vllm" / "bin" / "python")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class VllmStartError(RuntimeError):
    """vLLM exited or did not become healthy in time; the message ends with its log."""


class RealVllm:
    """``python -m vllm.entrypoints.openai.api_server`` with the tiny model on a free port."""

    address = "127.0.0.1"

    def __init__(
        self,
        *,
        python: Path | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        found = python or vllm_python()
        if found is None:
            raise FileNotFoundError(
                "no vLLM virtualenv: run scripts/install-vllm or set LLMD_VLLM_PYTHON"
            )
        self.python = found
        self.port = port or free_port(self.address)
        self.url = f"http://{self.address}:{self.port}"
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(extra_env or {})
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        self.log_path: Path | None = None
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(MODEL_DIR),
            "--served-model-name",
            MODEL_NAME,
            "--load-format",
            "dummy",
            "--dtype",
            "float32",
            "--host",
            self.address,
            "--port",
            str(self.port),
            "--max-model-len",
            "2048",
            "--enable-prefix-caching",
            "--block-size",
            str(BLOCK_SIZE),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED}
        env.update(
            VLLM_CPU_KVCACHE_SPACE="1",  # GiB
            PYTHONHASHSEED="0",
            PYTHONUNBUFFERED="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            HF_HUB_OFFLINE="1",
        )
        env.update(self.extra_env)
        return env

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start vLLM and wait until ``GET /health`` answers 200."""
        if self._proc is not None:
            raise RuntimeError("already started")
        began = time.monotonic()
        fd, name = tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log")
        self.log_path = Path(name)
        self._log = os.fdopen(fd, "wb")
        self._proc = subprocess.Popen(
            self.command(),
            cwd=REPO,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: EngineCore is stopped with it
        )
        try:
            self._wait_healthy(began)
        except BaseException:
            self.stop(keep_log=True)
            raise
        self.startup_seconds = time.monotonic() - began

    def _wait_healthy(self, began: float) -> None:
        assert self._proc is not None
        deadline = began + self.start_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise VllmStartError(
                        f"vLLM exited with code {code} before it was healthy; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise VllmStartError(
                        f"vLLM was not healthy after {self.start_timeout:.0f} s; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.5)

    def stop(self, *, keep_log: bool = False) -> None:
        """SIGTERM to the whole process group, SIGKILL after 20 s; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop_group(proc, STOP_GRACE)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.log_path is not None and not keep_log:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        with self.log_path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def _group_members(pgid: int, *, zombies: bool = False) -> list[psutil.Process]:
    """Processes in process group ``pgid``: live ones, and exited ones not yet reaped if asked."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and (zombies or proc.status() != psutil.STATUS_ZOMBIE):
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # The API server may exit before its EngineCore does: wait for the whole group.
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if proc.poll() is None or _group_members(pgid):
        _signal_group(pgid, signal.SIGKILL)
        proc.wait()
        end = time.monotonic() + 5.0
        while _group_members(pgid) and time.monotonic() < end:
            time.sleep(0.1)
    # A worker whose parent exited first is reparented to init as a zombie until init reaps it
    # (about a second here): give init a moment so that nothing named vLLM is left behind.
    end = time.monotonic() + 3.0
    while _group_members(pgid, zombies=True) and time.monotonic() < end:
        time.sleep(0.1)
