"""A clock for tests of behaviour that depends on time: it moves only when a test (or a sleep
through it) moves it, so spacing, windows and deadlines can be asserted exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FakeClock:
    """`clock()` reads the time; `advance` moves it; `sleep` is an `asyncio.sleep` in this time.

    `late` says how much later than asked each sleep wakes (a busy event loop), by call number
    (1-based); `sleeps` records every duration asked for."""

    def __init__(self, start: float = 1000.0, *, late: Callable[[int], float] | None = None):
        self.now = start
        self.sleeps: list[float] = []
        self._late = late or (lambda _: 0.0)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0) + self._late(len(self.sleeps))
        await asyncio.sleep(0)  # let the other tasks run, as a real sleep would
