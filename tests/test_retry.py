"""`RetryPolicy`, `CircuitBreaker` and `send_with_retries`.

The policy is a pure function of a seeded random source; the breaker runs on a fake clock; and
`send_with_retries` drives a real `ChatGptEsSession` against the emulator over loopback HTTP, so
every error it classifies is one the client really raised.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from fake_clock import FakeClock
from hypothesis import given
from hypothesis import strategies as st

from batchgpt.emulator import expected_answer
from batchgpt.errors import (
    CaptchaError,
    CloudflareChallengeError,
    NonceError,
    ProviderError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    SiteError,
    SiteUnreachableError,
    TransportError,
)
from batchgpt.retry import CircuitBreaker, HaltRule, RetryPolicy, send_with_retries

# The legacy chat, answering in JSON (streaming off), as these tests were written for it.
pytestmark = pytest.mark.emulator_config(chat="legacy", stream=False)

SERVER_ERROR = ServerError("server error: HTTP 503", http_status=503)
UNREACHABLE = [
    SERVER_ERROR,
    RequestTimeoutError("timed out"),
    TransportError("connection refused"),
    CloudflareChallengeError("challenge", http_status=403),
]
REACHABLE = [
    CaptchaError("Du musst das Kästchen anklicken!", http_status=200),
    SiteError("prohibited words", http_status=200),
    RateLimitedError("rate limited", retry_after=1.0),
    NonceError("nonce rejected", http_status=403),
]

# RetryPolicy --------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**32),
    retry=st.integers(1, 60),
    base=st.floats(0.001, 5.0),
    cap=st.floats(0.01, 120.0),
)
def test_delay_is_full_jitter_within_the_capped_exponential(
    seed: int, retry: int, base: float, cap: float
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    delay = policy.delay(retry, SERVER_ERROR, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2 ** (retry - 1))


def test_delay_spreads_over_the_whole_range_and_grows_until_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    rng = random.Random(7)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (4, 4.0), (6, 16.0), (7, 30.0), (20, 30.0)]:
        delays = [policy.delay(retry, SERVER_ERROR, rng) for _ in range(2000)]
        assert max(delays) <= ceiling
        assert max(delays) > 0.95 * ceiling, "jitter must reach the top of the range"
        assert min(delays) < 0.05 * ceiling, "full jitter starts at zero"


def test_the_same_seed_gives_the_same_delays() -> None:
    policy = RetryPolicy()
    first = [policy.delay(n, SERVER_ERROR, random.Random(3)) for n in range(1, 10)]
    again = [policy.delay(n, SERVER_ERROR, random.Random(3)) for n in range(1, 10)]
    assert first == again


@given(seed=st.integers(0, 2**32), retry=st.integers(1, 30), retry_after=st.floats(0.0, 600.0))
def test_retry_after_is_a_floor_even_past_the_cap(
    seed: int, retry: int, retry_after: float
) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    limited = RateLimitedError("rate limited", retry_after=retry_after)
    jitter = policy.delay(retry, SERVER_ERROR, random.Random(seed))
    assert policy.delay(retry, limited, random.Random(seed)) == max(jitter, retry_after)


def test_a_429_without_retry_after_backs_off_like_any_other_error() -> None:
    policy = RetryPolicy()
    limited = RateLimitedError("rate limited", retry_after=None)
    assert policy.delay(3, limited, random.Random(1)) == policy.delay(
        3, SERVER_ERROR, random.Random(1)
    )


# CircuitBreaker -----------------------------------------------------------------------------


def breaker_on(clock: FakeClock, **settings: float) -> CircuitBreaker:
    values = {"threshold": 3, "give_up_after": 100.0, "cooldown": 1.0, "max_cooldown": 8.0}
    return CircuitBreaker(clock=clock, **{**values, **settings})  # type: ignore[arg-type]


async def blocks(awaitable, seconds: float = 0.15) -> bool:
    """Whether `awaitable` is still waiting after `seconds` of real time (then it is cancelled)."""
    try:
        await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        return True
    return False


async def test_a_closed_breaker_admits_at_once() -> None:
    breaker = breaker_on(FakeClock())
    assert await breaker.admit() is False
    assert not breaker.is_open


@pytest.mark.parametrize("error", UNREACHABLE, ids=lambda e: e.kind)
async def test_opens_after_threshold_unreachable_failures_in_a_row(error: ProviderError) -> None:
    clock = FakeClock()
    breaker = breaker_on(clock)
    breaker.record(error, probe=False)
    breaker.record(error, probe=False)
    assert not breaker.is_open
    breaker.record(error, probe=False)
    assert breaker.is_open
    assert breaker.opened == 1
    assert await blocks(breaker.admit()), "an open breaker must hold attempts back"


@pytest.mark.parametrize("error", [*REACHABLE, None], ids=lambda e: e.kind if e else "answer")
async def test_an_answer_or_a_reachable_error_breaks_the_run_of_failures(
    error: ProviderError | None,
) -> None:
    breaker = breaker_on(FakeClock())
    for _ in range(2):
        breaker.record(SERVER_ERROR, probe=False)
    breaker.record(error, probe=False)
    for _ in range(2):
        breaker.record(SERVER_ERROR, probe=False)
    assert not breaker.is_open
    assert await breaker.admit() is False


@given(st.lists(st.sampled_from([*UNREACHABLE, *REACHABLE, None]), max_size=40))
def test_open_exactly_when_the_last_failures_in_a_row_reach_the_threshold(
    events: list[ProviderError | None],
) -> None:
    breaker = breaker_on(FakeClock(), give_up_after=1e9)
    in_a_row = 0
    for event in events:
        breaker.record(event, probe=False)
        unreachable = event is not None and event in UNREACHABLE
        in_a_row = in_a_row + 1 if unreachable else 0
        assert breaker.is_open == (in_a_row >= 3)


async def test_a_cancel_while_a_failed_probe_wakes_the_waiters_is_never_lost() -> None:
    """A run stopping (its drain deadline cancels every worker) just as a probe fails: the
    attempts waiting for the breaker must end, not wait on for the next probe. (asyncio.wait_for
    in Python 3.11 returns normally when its inner wait ends in the same step as a cancel.)"""
    clock = FakeClock()
    breaker = breaker_on(clock)
    for _ in range(3):
        breaker.record(SERVER_ERROR, probe=False)
    clock.advance(1.0)
    assert await breaker.admit() is True  # the probe
    waiting = [asyncio.create_task(breaker.admit()) for _ in range(3)]
    await asyncio.sleep(0)  # all three wait for the breaker
    breaker.record(SERVER_ERROR, probe=True)  # wakes them: the breaker stays open
    for task in waiting:
        task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(task.cancelled() for task in waiting), "an attempt swallowed its cancellation"


async def test_one_probe_per_cooldown_and_the_cooldown_doubles_up_to_its_cap() -> None:
    clock = FakeClock()
    breaker = breaker_on(clock)
    for _ in range(3):
        breaker.record(SERVER_ERROR, probe=False)
    for cooldown in (1.0, 2.0, 4.0, 8.0, 8.0):
        clock.advance(cooldown - 0.01)
        assert await blocks(breaker.admit()), f"admitted before the {cooldown} s cooldown ended"
        clock.advance(0.01)
        assert await breaker.admit() is True, "the first attempt after the cooldown is a probe"
        assert await blocks(breaker.admit()), "only one probe may be out at a time"
        breaker.record(SERVER_ERROR, probe=True)
        assert breaker.is_open
    assert breaker.opened == 1


async def test_a_successful_probe_closes_and_wakes_the_waiting_attempts() -> None:
    clock = FakeClock()
    breaker = breaker_on(clock)
    for _ in range(3):
        breaker.record(SERVER_ERROR, probe=False)
    clock.advance(1.0)
    assert await breaker.admit() is True
    waiters = [asyncio.create_task(breaker.admit()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiters)
    breaker.record(None, probe=True)
    assert not breaker.is_open
    assert await asyncio.wait_for(asyncio.gather(*waiters), 0.5) == [False, False, False]
    # Closed again, it starts over: threshold failures, then the first cooldown, not a doubled one.
    for _ in range(3):
        breaker.record(SERVER_ERROR, probe=False)
    assert breaker.opened == 2
    clock.advance(1.0)
    assert await breaker.admit() is True


async def test_a_waiting_attempt_cancelled_as_the_probe_fails_is_cancelled() -> None:
    # A stopped run cancels its workers; one waiting in admit() whose wake-up (a failed probe)
    # comes in the same step must end, not go on waiting (on 3.11 wait_for lost the cancel).
    clock = FakeClock()
    breaker = breaker_on(clock)
    for _ in range(3):
        breaker.record(SERVER_ERROR, probe=False)
    clock.advance(1.0)
    assert await breaker.admit() is True
    waiter = asyncio.create_task(breaker.admit())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    breaker.record(SERVER_ERROR, probe=True)  # wakes the waiter and opens again
    waiter.cancel()
    done, _ = await asyncio.wait([waiter], timeout=2)
    assert waiter in done, "the cancelled attempt went on waiting"
    assert waiter.cancelled()


async def test_a_probe_that_reaches_the_site_closes_the_breaker_even_when_refused() -> None:
    clock = FakeClock()
    breaker = breaker_on(clock)
    for _ in range(3):
        breaker.record(SERVER_ERROR, probe=False)
    clock.advance(1.0)
    assert await breaker.admit() is True
    breaker.record(CaptchaError("Du musst das Kästchen anklicken!"), probe=True)
    assert not breaker.is_open


def test_gives_up_once_unreachable_for_give_up_after() -> None:
    clock = FakeClock()
    breaker = breaker_on(clock, give_up_after=10.0)
    breaker.record(SERVER_ERROR, probe=False)
    clock.advance(9.9)
    breaker.record(SERVER_ERROR, probe=False)
    clock.advance(0.1)
    with pytest.raises(SiteUnreachableError) as raised:
        breaker.record(SERVER_ERROR, probe=False)
    assert raised.value.exit_code == 69
    assert "--give-up-after 10" in raised.value.message


async def test_waiting_attempts_give_up_without_another_request() -> None:
    clock = FakeClock()
    breaker = breaker_on(clock, give_up_after=5.0)
    for _ in range(3):
        breaker.record(SERVER_ERROR, probe=False)
    clock.advance(5.0)
    with pytest.raises(SiteUnreachableError):
        await asyncio.wait_for(breaker.admit(), 2.0)


def test_an_answer_restarts_the_unreachable_clock() -> None:
    clock = FakeClock()
    breaker = breaker_on(clock, give_up_after=10.0)
    breaker.record(SERVER_ERROR, probe=False)
    clock.advance(8.0)
    breaker.record(None, probe=False)
    clock.advance(8.0)
    breaker.record(SERVER_ERROR, probe=False)
    clock.advance(8.0)
    breaker.record(SERVER_ERROR, probe=False)
    clock.advance(2.0)
    with pytest.raises(SiteUnreachableError):
        breaker.record(SERVER_ERROR, probe=False)


# send_with_retries against the emulator ---------------------------------------------------

FAST = RetryPolicy(retries=2, base_delay=0.01, max_delay=0.05)


def patient_breaker() -> CircuitBreaker:
    return CircuitBreaker(threshold=100, give_up_after=60.0)


async def test_a_transient_fault_is_retried_until_the_site_answers(emulator) -> None:
    emulator.configure(error_rate=1.0)
    async with emulator.session(timeout=5) as session:
        calls = 0

        async def send() -> str:
            nonlocal calls
            calls += 1
            if calls == 3:
                emulator.configure(error_rate=0.0)
            return await session.send("back again")

        outcome = await send_with_retries(
            send, FAST, patient_breaker(), HaltRule(), random.Random(1)
        )
    assert outcome.answer == expected_answer("back again")
    assert (outcome.error, outcome.attempts) == (None, 3)
    assert emulator.stats.posts == 3
    assert emulator.stats.answers == 1


async def test_retries_run_out_with_the_last_error(emulator) -> None:
    emulator.configure(error_rate=1.0)
    async with emulator.session(timeout=5) as session:
        outcome = await send_with_retries(
            lambda: session.send("never"), FAST, patient_breaker(), HaltRule(), random.Random(1)
        )
    assert outcome.answer is None
    assert isinstance(outcome.error, ServerError)
    assert outcome.error.retryable and outcome.error.http_status in (500, 502, 503, 520)
    assert outcome.attempts == FAST.retries + 1
    assert emulator.stats.posts == FAST.retries + 1


@pytest.mark.parametrize(
    ("message", "error_type"),
    [("[captcha] hola", CaptchaError), ("[site-error] hola", SiteError)],
)
async def test_final_errors_are_not_retried(emulator, message: str, error_type: type) -> None:
    async with emulator.session(timeout=5) as session:
        outcome = await send_with_retries(
            lambda: session.send(message), FAST, patient_breaker(), HaltRule(), random.Random(1)
        )
    assert isinstance(outcome.error, error_type)
    assert not outcome.error.retryable
    assert outcome.attempts == 1
    assert emulator.stats.posts == 1


async def test_an_expired_nonce_is_scraped_again_without_spending_an_attempt(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        await session.send("first")
        emulator.emu.rotate_nonces()
        outcome = await send_with_retries(
            lambda: session.send("second"), FAST, patient_breaker(), HaltRule(), random.Random(1)
        )
    assert outcome.answer == expected_answer("second")
    assert outcome.attempts == 1
    assert (emulator.stats.gets, emulator.stats.posts, emulator.stats.nonce_failures) == (2, 3, 1)


async def test_a_nonce_that_stays_stale_is_a_retryable_error_that_counts(emulator) -> None:
    emulator.configure(stale_page_nonce=True)
    async with emulator.session(timeout=5) as session:
        outcome = await send_with_retries(
            lambda: session.send("stale"), FAST, patient_breaker(), HaltRule(), random.Random(1)
        )
    assert isinstance(outcome.error, NonceError)
    assert outcome.attempts == FAST.retries + 1
    assert emulator.stats.posts == 2 * (FAST.retries + 1)


@pytest.mark.parametrize("retry_after", ["1", "date"])
async def test_retry_after_is_waited_for(emulator, retry_after: str) -> None:
    emulator.configure(rate_limit=1, retry_after=retry_after)
    async with emulator.session(timeout=5) as session:
        await session.send("first")
        outcome = await send_with_retries(
            lambda: session.send("second"), FAST, patient_breaker(), HaltRule(), random.Random(1)
        )
    assert outcome.answer == expected_answer("second")
    assert outcome.attempts == 2
    assert emulator.stats.status[429] == 1
    times = emulator.stats.post_times
    # The policy's own backoff is at most 0.05 s here: only Retry-After explains a 1 s pause.
    assert times[2] - times[1] >= 0.9


@pytest.mark.emulator_config(hang_rate=1.0, hang_seconds=1.0)
async def test_a_hung_request_times_out_and_is_retried(emulator) -> None:
    async with emulator.session(timeout=0.3) as session:
        outcome = await send_with_retries(
            lambda: session.send("slow"),
            RetryPolicy(retries=1, base_delay=0.01, max_delay=0.01),
            patient_breaker(),
            HaltRule(),
            random.Random(1),
        )
    assert isinstance(outcome.error, RequestTimeoutError)
    assert outcome.attempts == 2


@pytest.mark.emulator_config(down=True)
async def test_a_site_that_stays_down_stops_the_prompt_instead_of_failing_it(emulator) -> None:
    breaker = CircuitBreaker(threshold=2, give_up_after=1.5, cooldown=0.2, max_cooldown=5.0)
    policy = RetryPolicy(retries=1000, base_delay=0.01, max_delay=0.02)
    async with emulator.session(timeout=5) as session:
        with pytest.raises(SiteUnreachableError):
            await send_with_retries(
                lambda: session.send("down"), policy, breaker, HaltRule(), random.Random(1)
            )
    assert breaker.opened == 1
    # Two failures open it; then probes 0.2, 0.4 and 0.8 s apart: never a retry storm.
    assert emulator.stats.gets <= 6
