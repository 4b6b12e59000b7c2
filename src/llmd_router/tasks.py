"""The task owner: every background loop of the router runs under it, supervised.

Theory of operation (after trio's nurseries). A ``TaskOwner`` lives inside one
``asyncio.TaskGroup``, entered by the router's lifetime; every loop it starts is a child of that
group, so none outlives the router and none runs unobserved. A loop is a coroutine function
``fn(ready)`` that runs until it is cancelled:

- ``await owner.start(name, fn)`` returns once ``fn`` calls ``ready()`` (the handshake: the
  discovery has its first view of the pool, say), and raises what ``fn`` raised if it failed
  before that. ``owner.spawn(name, fn)`` does not wait.
- A loop that fails after its handshake (raises, returns, or is cancelled by anyone but its
  owner) is logged with its traceback and counted, never silently lost. Then, with
  ``restart=True``, it runs again after a back-off (0.1 s, doubling up to 5 s) unless it failed
  more than ``max_failures`` times within ``window_s``; a loop that is not restarted, or has
  failed too often, is *given up*: ``on_given_up(name, error)`` is called (the router turns its
  readiness off, so its health check tells the proxy and the orchestrator).
- ``Loop.cancel()`` stops a loop on purpose (an endpoint left the pool); ``close()`` stops them
  all when the router stops. Neither counts as a failure.

``statistics()`` lists every loop with its state, restarts and last error (``/debug/tasks``).

``Lifetime`` gives ``start()`` / ``stop()`` to a component whose whole life is one structured
coroutine (the router's: its servers in an exit stack, its loops in the task group).

``run_blocking(fn, *args)`` runs CPU-bound work that releases the GIL (a tokenizer's Rust code)
on one of the router's two worker threads and awaits it, so that the event loop keeps serving
other requests meanwhile.

This module is the only place in the router that creates tasks and threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypeVar

__all__ = ["Lifetime", "Loop", "LoopFn", "Ready", "TaskOwner", "run_blocking"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_BACKOFF_S: Final = 0.1
MAX_BACKOFF_S: Final = 5.0

State = Literal["starting", "running", "restarting", "given up", "stopped"]


WORKER_THREADS: Final = 2
_workers: concurrent.futures.ThreadPoolExecutor | None = None


async def run_blocking(fn: Callable[..., T], /, *args: Any) -> T:
    """``fn(*args)`` on a worker thread, awaited. For work that releases the GIL; anything it
    touches must be safe to touch from another thread."""
    global _workers  # noqa: PLW0603  one pool for the process, made when first needed
    if _workers is None:
        _workers = concurrent.futures.ThreadPoolExecutor(
            WORKER_THREADS, thread_name_prefix="llmd-blocking"
        )
    return await asyncio.get_running_loop().run_in_executor(_workers, fn, *args)


class Ready(Protocol):
    def __call__(self) -> None:
        """The loop is up: ``start`` returns (later calls do nothing)."""
        ...


LoopFn = Callable[[Ready], Awaitable[object]]


class LoopEnded(RuntimeError):
    """A loop returned: a loop is meant to run until its owner stops it."""


GivenUp = Callable[[str, BaseException], Awaitable[None] | None]


def _ignore(_name: str, _error: BaseException) -> None:
    return None


@dataclass(eq=False)
class Loop:
    """One supervised loop: what its owner and the debug pages see of it."""

    name: str
    restart: bool
    on_given_up: GivenUp = _ignore
    state: State = "starting"
    restarts: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = None
    _stopping: bool = False
    _failures: deque[float] = field(default_factory=deque)

    def cancel(self) -> None:
        """Stop this loop on purpose (not a failure)."""
        self._stopping = True
        if self.task is not None:
            self.task.cancel()

    def statistics(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "restarts": self.restarts,
            "lastError": self.last_error,
        }


class TaskOwner:
    def __init__(
        self,
        group: asyncio.TaskGroup,
        *,
        on_given_up: GivenUp = _ignore,
        max_failures: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._group = group
        self._on_given_up = on_given_up
        self._max_failures = max_failures
        self._window_s = window_s
        self._clock = clock
        self._loops: dict[str, Loop] = {}
        self._closing = False

    @property
    def loops(self) -> dict[str, Loop]:
        return dict(self._loops)

    async def start(
        self, name: str, fn: LoopFn, *, restart: bool = True, on_given_up: GivenUp | None = None
    ) -> Loop:
        """Run ``fn`` supervised; return once it is ready. Raises what it raised before that.
        ``on_given_up`` replaces the owner's for this loop."""
        loop, started = self._launch(name, fn, restart, on_given_up)
        await started
        return loop

    def spawn(
        self, name: str, fn: LoopFn, *, restart: bool = True, on_given_up: GivenUp | None = None
    ) -> Loop:
        """Run ``fn`` supervised, without waiting for its handshake: it counts as up at once,
        so any failure is reported (and restarted) as a failure after start."""
        loop, started = self._launch(name, fn, restart, on_given_up)
        loop.state = "running"
        started.set_result(None)
        return loop

    def _launch(
        self, name: str, fn: LoopFn, restart: bool, on_given_up: GivenUp | None
    ) -> tuple[Loop, asyncio.Future[None]]:
        if self._closing:
            raise RuntimeError(f"cannot start {name!r}: the router is stopping")
        old = self._loops.get(name)
        if old is not None and old.state not in ("given up", "stopped") and not old._stopping:
            raise RuntimeError(f"a loop named {name!r} is already running")
        # A loop being stopped may still be unwinding: the new one takes its name at once.
        loop = Loop(name, restart, on_given_up=on_given_up or self._on_given_up)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loops[name] = loop
        self._run_task(loop, fn, started, killed=False)
        return loop, started

    def _run_task(
        self, loop: Loop, fn: LoopFn, started: asyncio.Future[None], *, killed: bool
    ) -> None:
        task = self._group.create_task(self._supervise(loop, fn, started, killed), name=loop.name)
        loop.task = task

        def ended(task: asyncio.Task[None]) -> None:
            # A task cancelled before its first step never entered _supervise: nothing in it
            # saw the cancellation. Supervise it again, counting the kill as a failure.
            if not task.cancelled() or loop._stopping or self._closing:
                return
            if loop.state in ("stopped", "given up"):
                return
            if not started.done():
                started.cancel()
                return
            self._run_task(loop, fn, started, killed=True)

        task.add_done_callback(ended)

    async def _supervise(
        self, loop: Loop, fn: LoopFn, started: asyncio.Future[None], killed: bool
    ) -> None:
        while True:
            try:
                if killed:  # outside fn: before it first ran, or while it waited to restart
                    if not await self._failed(loop, asyncio.CancelledError()):
                        return
                    await asyncio.sleep(FIRST_BACKOFF_S)
                    loop.restarts += 1
                await self._run(loop, fn, started)
                return
            except asyncio.CancelledError:
                if not (loop._stopping or self._closing):
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                    killed = True
                    continue
                loop.state = "stopped"  # by its owner, or the router is stopping
                if not started.done():
                    started.cancel()
                if self._loops.get(loop.name) is loop and not self._closing:
                    del self._loops[loop.name]  # an endpoint's loop is not kept once it left
                raise

    async def _run(self, loop: Loop, fn: LoopFn, started: asyncio.Future[None]) -> None:
        backoff = FIRST_BACKOFF_S
        while True:

            def ready() -> None:
                loop.state = "running"
                if not started.done():
                    started.set_result(None)

            error: BaseException
            try:
                await fn(ready)
                error = LoopEnded(f"{loop.name} returned")
            except asyncio.CancelledError as exc:
                if loop._stopping or self._closing:
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()  # cancelled by someone else: a failure like any other
                error = exc
            except Exception as exc:  # noqa: BLE001  whatever kills a loop is reported
                error = exc
            if not started.done():  # it never came up: the caller of start() gets the error
                loop.state = "given up"
                loop.last_error = _describe(error)
                started.set_exception(error)
                return
            if not await self._failed(loop, error):
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            loop.restarts += 1

    async def _failed(self, loop: Loop, error: BaseException) -> bool:
        """Report a failure; True when the loop is to be restarted."""
        loop.last_error = _describe(error)
        now = self._clock()
        loop._failures.append(now)
        while loop._failures and now - loop._failures[0] > self._window_s:
            loop._failures.popleft()
        again = loop.restart and len(loop._failures) <= self._max_failures
        _log.error(
            "background loop %r failed (%s); %s",
            loop.name,
            loop.last_error,
            "restarting it" if again else "giving it up",
            exc_info=(type(error), error, error.__traceback__),
        )
        if again:
            loop.state = "restarting"
            return True
        loop.state = "given up"
        outcome = loop.on_given_up(loop.name, error)
        if outcome is not None:
            await outcome
        return False

    async def close(self) -> None:
        """Stop every loop and wait for them to end."""
        self._closing = True
        tasks = [loop.task for loop in self._loops.values() if loop.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def statistics(self) -> dict[str, Any]:
        return {name: loop.statistics() for name, loop in sorted(self._loops.items())}


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "cancelled from outside its owner"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


LifetimeBody = Callable[[Ready, asyncio.Event], Coroutine[Any, Any, None]]


class Lifetime:
    """``start()`` / ``stop()`` for a component whose life is one structured coroutine.

    ``body(ready, stopping)`` runs in a task of its own: it enters its servers and its task
    group, calls ``ready()`` once it serves, waits for ``stopping`` and unwinds in order.
    ``start`` returns once it is ready, or raises what stopped it before; ``stop`` asks it to
    unwind and waits, raising what it raised. A body that ends by itself is logged."""

    def __init__(self, name: str, body: LifetimeBody) -> None:
        self._name = name
        self._body = body
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self._name} is already started")
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not started.done():
                started.set_result(None)

        self._stopping = asyncio.Event()
        task = self._task = loop.create_task(self._body(ready, self._stopping), name=self._name)
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            task.add_done_callback(self._ended)
            return
        self._task = None
        task.result()  # raises what stopped it
        raise RuntimeError(f"{self._name} ended before it was ready")

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping.is_set() or task.cancelled():
            return
        error = task.exception()
        _log.error(
            "%s ended without being stopped (%s)",
            self._name,
            _describe(error) if error is not None else "it returned",
            exc_info=(type(error), error, error.__traceback__) if error is not None else None,
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        await task
