"""The pacer: even spacing, no window above the rate, late wake-ups caught up without bursts.

Every test runs the pacer on a fake clock whose sleeps move it (tests/fake_clock.py), so the
spacing and the windows are exact: a late wake-up is a sleep that returns later than asked, a busy
event loop is time that passes between requests.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from fake_clock import FakeClock

from batchgpt.emulator import max_in_window
from batchgpt.pacing import HEADROOM, Pacer


def paced(rate: float, clock: FakeClock) -> Pacer:
    return Pacer(rate, clock=clock, sleep=clock.sleep)


async def acquire_times(
    pacer: Pacer, clock: FakeClock, count: int, workers: int, busy: float = 0.0
) -> list[float]:
    """When each of `count` requests was let out; every third one keeps the loop `busy` after."""
    times: list[float] = []

    async def worker() -> None:
        while len(times) < count:
            await pacer.acquire()
            times.append(clock())
            if busy and len(times) % 3 == 0:
                clock.advance(busy)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return times[:count]


@pytest.mark.parametrize("workers", [1, 16])
def test_requests_are_spaced_one_interval_apart_from_the_first(workers: int) -> None:
    clock = FakeClock()
    start = clock()
    times = asyncio.run(acquire_times(paced(50, clock), clock, 120, workers))
    interval = HEADROOM / 50
    assert times == pytest.approx([start + k * interval for k in range(120)])
    assert max_in_window(times) <= 50
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(interval)  # no burst at start, nor later


@pytest.mark.parametrize("workers", [1, 8])
def test_late_wake_ups_are_caught_up_not_lost(workers: int) -> None:
    """Every third sleep wakes 4 ms late and every third request keeps the loop busy 4 ms: each
    request still goes out within those 4 ms of its slot, plus 4 ms for each full window before
    it (the ceiling counts from when requests really went out), so the run keeps the rate."""
    late = 0.004
    clock = FakeClock(late=lambda n: late if n % 3 == 0 else 0.0)
    start = clock()
    pacer = paced(200, clock)
    times = asyncio.run(acquire_times(pacer, clock, 400, workers, busy=late))
    for k, moment in enumerate(times):
        slot = start + k * pacer.interval
        assert slot - 1e-9 <= moment <= slot + late * (1 + k // pacer.ceiling) + 1e-9, k
    assert max_in_window(times) <= 200
    # A capacity-1 bucket would lose every late wake-up: 400 requests would take ~0.5 s longer.
    assert times[-1] - times[0] <= 399 * pacer.interval + 2 * late + 1e-9


def test_a_long_stall_is_caught_up_by_two_requests_at_most_and_never_bursts() -> None:
    """After a wake-up ten intervals late the pacer's timeline restarts one interval behind: the
    late request and two more go at once, then one interval apart again."""
    clock = FakeClock(late=lambda n: 0.05 if n % 10 == 0 else 0.0)
    pacer = paced(200, clock)
    times = asyncio.run(acquire_times(pacer, clock, 600, 4))
    assert max_in_window(times) <= 200
    gaps = [b - a for a, b in itertools.pairwise(times)]
    at_once = [len(list(run)) for zero, run in itertools.groupby(gaps, lambda g: g < 1e-9) if zero]
    assert at_once and max(at_once) == 2
    assert all(gap >= pacer.interval - 1e-9 for gap in gaps if gap >= 1e-9)


def test_nothing_is_saved_up_while_idle() -> None:
    clock = FakeClock()
    pacer = paced(50, clock)

    async def scenario() -> list[float]:
        await acquire_times(pacer, clock, 10, 1)
        clock.advance(10.0)  # idle
        return await acquire_times(pacer, clock, 60, 4)

    after = asyncio.run(scenario())
    resumed = after[0]
    for k, moment in enumerate(after):
        assert moment >= resumed + (k - 1) * pacer.interval - 1e-9, k
    assert max_in_window(after) <= 50


def test_fractional_rates_keep_their_spacing_and_ceiling() -> None:
    clock = FakeClock(late=lambda n: 0.3 if n % 2 else 0.0)
    pacer = paced(2.5, clock)
    assert pacer.ceiling == 2
    assert pacer.window == pytest.approx(2 * HEADROOM / 2.5)
    times = asyncio.run(acquire_times(pacer, clock, 30, 4))
    assert max_in_window(times, pacer.window) <= 2
    assert max_in_window(times) <= 3  # 2.5/s: no one-second window ever holds a third


def test_below_one_per_second_every_gap_is_a_whole_interval_even_after_late_wake_ups() -> None:
    clock = FakeClock(late=lambda n: 1.0 if n % 2 else 0.0)
    pacer = paced(0.5, clock)
    assert pacer.ceiling == 1
    times = asyncio.run(acquire_times(pacer, clock, 12, 3))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= pacer.interval - 1e-9


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Pacer(0)
