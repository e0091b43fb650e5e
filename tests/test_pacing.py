"""The pacer: even spacing, no window above the rate, late wake-ups caught up without bursts."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from batchgpt.emulator import max_in_window
from batchgpt.pacing import HEADROOM, Pacer


async def _acquire_times(
    pacer: Pacer, count: int, workers: int, stall_every: int = 0
) -> list[float]:
    times: list[float] = []

    async def worker() -> None:
        while len(times) < count:
            await pacer.acquire()
            times.append(time.monotonic())
            if stall_every and len(times) % stall_every == 0:
                time.sleep(0.004)  # a busy event loop: wake-ups come late

    await asyncio.gather(*(worker() for _ in range(workers)))
    return times[:count]


@pytest.mark.parametrize("workers", [1, 16])
def test_no_second_holds_more_than_the_rate(workers: int) -> None:
    times = asyncio.run(_acquire_times(Pacer(50), 120, workers))
    assert max_in_window(times) <= 50
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps[:5]) > 0.015  # no burst at start: spaced ~20 ms from the first request


def test_late_wake_ups_are_caught_up_not_lost() -> None:
    times = asyncio.run(_acquire_times(Pacer(200), 400, 8, stall_every=3))
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert max_in_window(times) <= 200
    assert achieved > 200 * 0.9  # a capacity-1 bucket loses every stall; the pacer recovers


def test_fractional_rates_keep_their_spacing() -> None:
    pacer = Pacer(2.5)
    assert pacer.ceiling == 2
    assert pacer.window == pytest.approx(2 * HEADROOM / 2.5)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Pacer(0)
