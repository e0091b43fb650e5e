"""Clocks for tests of behaviour that depends on time: they move only when a test (or a sleep
through them) moves them, so spacing, windows and deadlines can be asserted exactly.

`FakeClock` is for units that take a clock (the pacer, the breaker, the pool, progress);
`VirtualTimeLoop` is an event loop whose own clock a test moves, for what asyncio times (the
runner's drain deadline)."""

from __future__ import annotations

import asyncio
import time
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


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when a test calls `advance`: a timer (asyncio.sleep,
    asyncio.timeout) falls due exactly when the test has moved the clock past it, however long
    the real I/O in between takes. Wait for real time with `real_sleep`."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


async def real_sleep(seconds: float) -> None:
    """Sleep in real time, whatever the event loop's clock says."""
    await asyncio.to_thread(time.sleep, seconds)
