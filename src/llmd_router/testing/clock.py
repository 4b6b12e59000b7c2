"""A clock that moves only when the test says so, and a random source that draws what it is told."""

from __future__ import annotations

import random

__all__ = ["FakeClock", "FixedDraw"]


class FakeClock:
    """Call it for the time (seconds, like ``time.monotonic``); ``advance`` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("time does not go back")
        self.now += seconds
        return self.now


class FixedDraw(random.Random):
    """A random source whose every ``random()`` draw is ``value`` (set it between calls)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value
