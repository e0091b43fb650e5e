"""When to try a prompt again, and when to stop trying the site at all.

`RetryPolicy` is the retry rule as data: capped exponential backoff with full jitter, at least the
site's Retry-After, only for retryable errors. `CircuitBreaker` watches every attempt of the run:
after `threshold` unreachable failures in a row it pauses dispatch, lets one probe through per
cooldown (doubling up to a cap), and once the site has been unreachable for `give_up_after`
seconds it raises `SiteUnreachableError`, so the run stops (exit 69) instead of writing errors.
`HaltRule` watches for answers that mean the service will refuse every prompt (a quota, a refused
key, a page without a chat): after an error's `halts_after` of them in a row it raises
`SiteHaltedError`, and the run stops with the rest unwritten. `send_with_retries` applies all
three to one prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from batchgpt.errors import (
    UNREACHABLE_KINDS,
    BlockedError,
    ProviderError,
    RateLimitedError,
    SiteHaltedError,
    SiteUnreachableError,
)
from batchgpt.providers.base import Answer


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, retry: int, error: ProviderError, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        backoff = rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (retry - 1)))
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            return max(backoff, error.retry_after)
        return backoff


class CircuitBreaker:
    """Closed while the site answers; open (probing) while it does not."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        give_up_after: float = 300.0,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.give_up_after = give_up_after
        self.first_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self.failures = 0
        self.opened = 0
        self._cooldown = cooldown
        self._open_until: float | None = None
        self._down_since: float | None = None
        self._probing = False
        self._changed = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    async def admit(self) -> bool:
        """Wait until an attempt may go out; True when it is the breaker's probe."""
        while self._open_until is not None:
            now = self.clock()
            self._check_give_up(now)
            if not self._probing and now >= self._open_until:
                self._probing = True
                return True
            self._changed.clear()
            wait = self._open_until - now if not self._probing else 1.0
            if self._down_since is not None:  # wake in time to give up on schedule
                wait = min(wait, self._down_since + self.give_up_after - now)
            wait = max(0.05, wait)
            # Not asyncio.wait_for: in Python 3.11 it loses a cancel that comes in the step the
            # event is set, and the run's drain could then wait for the breaker to give up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()
        return False

    def record(self, error: ProviderError | None, probe: bool) -> None:
        """Feed the outcome of one attempt (None for an answer)."""
        now = self.clock()
        if error is None or error.kind not in UNREACHABLE_KINDS:
            self.failures = 0
            self._down_since = None
            self._cooldown = self.first_cooldown
            if self._open_until is not None:
                self._open_until = None
                self._probing = False
                self._changed.set()
            return
        self.failures += 1
        if self._down_since is None:
            self._down_since = now
        if probe:
            self._probing = False
            self._cooldown = min(self._cooldown * 2, self.max_cooldown)
            self._open_until = now + self._cooldown
            self._changed.set()
        elif self._open_until is None and self.failures >= self.threshold:
            self.opened += 1
            self._open_until = now + self._cooldown
        self._check_give_up(now)

    def _check_give_up(self, now: float) -> None:
        if self._down_since is not None and now - self._down_since >= self.give_up_after:
            raise SiteUnreachableError(
                f"the site has been unreachable for {now - self._down_since:.0f} s "
                f"(--give-up-after {self.give_up_after:g}); unprocessed prompts are left for "
                "the next run"
            )


class HaltRule:
    """Counts, across the run, the failures in a row that say the service refuses everyone."""

    def __init__(self) -> None:
        self.in_a_row = 0

    def record(self, error: ProviderError | None) -> None:
        """Feed one attempt's outcome; raises `SiteHaltedError` when the run must stop."""
        if error is None:
            self.in_a_row = 0
        elif error.halts_after:
            self.in_a_row += 1
            if self.in_a_row >= error.halts_after:
                times = f" ({self.in_a_row} times in a row)" if self.in_a_row > 1 else ""
                raise SiteHaltedError(
                    f"stopped: the service answered {error.kind}: {error.message}{times}; the "
                    "prompts not yet answered are left for the next run"
                )


@dataclass(slots=True)
class Outcome:
    answer: Answer | None
    error: ProviderError | None
    attempts: int


async def send_with_retries(
    send: Callable[[], Awaitable[Answer]],
    policy: RetryPolicy,
    breaker: CircuitBreaker,
    halts: HaltRule,
    rng: random.Random,
) -> Outcome:
    """Try `send` until it answers, fails for good, or runs out of retries.

    The breaker's probes do not spend the prompt's retries: a prompt is not failed for the time
    the whole site was down. A failure that may halt the run is retried while the run goes on
    (a single broken page is no verdict on the site); a banned proxy is left for another one
    without spending an attempt.
    """
    attempts = retries = 0
    while True:
        probe = await breaker.admit()
        attempts += 1
        try:
            answer = await send()
        except ProviderError as error:
            breaker.record(error, probe)
            halts.record(error)
            if isinstance(error, BlockedError):
                attempts -= 1
                continue
            if not error.retryable and not error.halts_after:
                return Outcome(None, error, attempts)
            if not probe:
                retries += 1
            if retries > policy.retries:
                return Outcome(None, error, attempts)
            await asyncio.sleep(policy.delay(max(retries, 1), error, rng))
        else:
            breaker.record(None, probe)
            halts.record(None)
            return Outcome(answer, None, attempts)
