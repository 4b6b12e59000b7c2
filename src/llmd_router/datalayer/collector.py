"""Polling every endpoint's sources on a fixed tick.

One task per endpoint, as llm-d has one goroutine per endpoint: a slow or hung server delays
only its own signals. On each tick (``--refresh-metrics-interval``, 50 ms by default) the task
polls its bound sources one after the other, each with a timeout, and hands what it got to the
extractors bound to that source. Start times are spread over the first tick so that a hundred
endpoints are not polled in one burst. A tick that overruns is not made up: the next one starts
at once and the schedule moves on, so a slow server is polled as fast as it answers and no
faster.

A failed poll skips the source's extractors, so the endpoint's ``updated_at`` does not advance
and the endpoint ages into staleness: the store stops offering it to new requests once its
signals are older than the staleness threshold, and offers it again after the next good poll.
The first failure and the recovery are logged once each; failures in between are counted.

The bindings can be replaced while running (a configuration reload); each task reads them at
the start of every tick.

What a poll reads is written to the store (``EndpointStore.report``): each extractor gets the
endpoint's current snapshot and returns its new signals. The loops are the task owner's
(``llmd_router.tasks``): one that dies is reported and restarted; ``unwatch`` stops one on
purpose.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.interfaces import Extractor, PollingSource
    from llmd_router.datalayer.store import EndpointStore
    from llmd_router.tasks import Loop, Ready, TaskOwner

__all__ = ["Collector", "SourceBinding"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceBinding:
    source: PollingSource
    source_type: str
    extractors: tuple[tuple[Extractor, str], ...]  # (extractor, its type)


def _noop(*_: str) -> None:
    return None


class Collector:
    def __init__(
        self,
        store: EndpointStore,
        bindings: Sequence[SourceBinding] = (),
        *,
        interval_s: float = 0.05,
        timeout_s: float = 1.0,
        on_poll_error: Callable[[str], None] = _noop,
        on_extract_error: Callable[[str, str], None] = _noop,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self.bindings: tuple[SourceBinding, ...] = tuple(bindings)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._on_poll_error = on_poll_error
        self._on_extract_error = on_extract_error
        self._clock = clock
        self._rng = rng or random.Random()
        self._endpoints: set[str] = set()  # ids
        self._loops: dict[str, Loop] = {}
        self._owner: TaskOwner | None = None
        self.polls = 0
        self.poll_errors = 0

    def start(self, owner: TaskOwner) -> None:
        """Poll every watched endpoint from now on, each in a loop of ``owner``'s."""
        self._owner = owner
        self._sync()

    def watch(self, endpoint: Endpoint) -> None:
        """Poll ``endpoint`` from now on (while there is something to poll)."""
        self._endpoints.add(endpoint.id)
        self._sync()

    def unwatch(self, endpoint: Endpoint) -> None:
        """Stop polling ``endpoint`` and release its connections."""
        self._endpoints.discard(endpoint.id)
        loop = self._loops.pop(endpoint.id, None)
        if loop is not None:
            loop.cancel()
        for binding in self.bindings:
            binding.source.forget(endpoint)

    def replace_bindings(self, bindings: Sequence[SourceBinding]) -> None:
        """Poll with ``bindings`` from the next tick; sources no longer bound are closed."""
        keep = {id(b.source) for b in bindings}
        for old in self.bindings:
            if id(old.source) not in keep:
                old.source.close()
        self.bindings = tuple(bindings)
        self._sync()

    def _sync(self) -> None:
        """One loop per watched endpoint while there are bindings; none otherwise."""
        if not self.bindings:
            for loop in self._loops.values():
                loop.cancel()
            self._loops.clear()
            return
        owner = self._owner
        if owner is None:  # not started yet
            return
        for endpoint_id in self._endpoints - self._loops.keys():
            self._loops[endpoint_id] = owner.spawn(
                f"collect {endpoint_id}", functools.partial(self._run, endpoint_id)
            )

    def close(self) -> None:
        """Release every source's connections (the loops end with their owner)."""
        for loop in self._loops.values():
            loop.cancel()
        self._loops.clear()
        self._endpoints.clear()
        for binding in self.bindings:
            binding.source.close()

    def statistics(self) -> dict[str, object]:
        return {
            "endpoints": len(self._loops),
            "intervalSeconds": self.interval_s,
            "timeoutSeconds": self.timeout_s,
            "polls": self.polls,
            "pollErrors": self.poll_errors,
            "sources": [b.source.name for b in self.bindings],
        }

    async def _run(self, endpoint_id: str, ready: Ready) -> None:
        ready()
        await asyncio.sleep(self._rng.random() * self.interval_s)
        next_at = self._clock()
        tick = 0
        failing: set[str] = set()
        while True:
            for binding in self.bindings:
                every = binding.source.interval_s
                if every and tick % max(1, round(every / self.interval_s)):
                    continue
                await self._poll(endpoint_id, binding, failing)
            tick += 1
            next_at += self.interval_s
            delay = next_at - self._clock()
            if delay < 0:  # overran: start the next tick now, and do not try to catch up
                next_at -= delay
                delay = 0.0
            await asyncio.sleep(delay)

    async def _poll(self, endpoint_id: str, binding: SourceBinding, failing: set[str]) -> None:
        endpoint = self._store.by_id(endpoint_id)
        if endpoint is None:  # it left the pool; unwatch stops this loop
            return
        source = binding.source
        self.polls += 1
        error: str | None = None
        data: Any = None
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await source.poll(endpoint)
        except TimeoutError:
            error = f"no response within {self.timeout_s:g}s"
        except Exception as exc:  # noqa: BLE001  any failure of a source is that endpoint's
            error = str(exc) or type(exc).__name__
        if error is not None:
            self.poll_errors += 1
            self._on_poll_error(binding.source_type)
            self._store.report(endpoint_id, signal_error=f"{source.name}: {error}")
            if source.name not in failing:
                failing.add(source.name)
                _log.warning(
                    "endpoint %s (%s): %s poll failed: %s; it is not offered new requests "
                    "once its signals are stale, until a poll succeeds",
                    endpoint.id,
                    endpoint.key,
                    source.name,
                    error,
                )
            return
        if source.name in failing:
            failing.discard(source.name)
            _log.info("endpoint %s (%s): %s polls again", endpoint.id, endpoint.key, source.name)
        now = self._clock()
        problems: list[str] = []
        current = self._store.by_id(endpoint_id)  # the poll awaited: take the newest snapshot
        if current is None or current.key != endpoint.key:  # gone, or another server by now
            return
        for extractor, extractor_type in binding.extractors:
            try:
                signals = extractor.extract(data, current, now)
            except Exception as exc:  # noqa: BLE001  a plugin's bug must not stop collection
                errors: Sequence[str] = [f"{type(exc).__name__}: {exc}"]
            else:
                errors = signals.errors
                if signals.metrics is not None or signals.models is not None:
                    # The next extractor reads what this one found.
                    current = self._store.report(
                        endpoint_id, metrics=signals.metrics, models=signals.models
                    )
                    if current is None:
                        return
            if errors:
                self._on_extract_error(binding.source_type, extractor_type)
                problems.append(f"{extractor.name}: {'; '.join(errors)}")
        self._store.report(endpoint_id, signal_error="; ".join(problems))
