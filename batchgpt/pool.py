"""`SessionPool`: the run's nonce-caching sessions, spread evenly over its proxies.

Each session keeps one proxy for life (its cookies and nonce belong to that IP). A proxy whose
requests keep failing to reach the site is benched for a while and its sessions are skipped; when
every proxy is benched the pool hands out sessions anyway and the circuit breaker does the pausing.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable

from batchgpt.errors import UNREACHABLE_KINDS, ProviderError
from batchgpt.pacing import Pacer
from batchgpt.providers.session import ChatGptEsSession

BENCH_AFTER_FAILURES = 3
BENCH_SECONDS = 30.0


class SessionPool:
    def __init__(
        self,
        base_url: str,
        *,
        sessions: int,
        proxies: list[str],
        timeout: float,
        limiter: Pacer | None,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        proxy_cycle = itertools.cycle(proxies or [None])
        self.sessions = [
            ChatGptEsSession(
                base_url,
                proxy=next(proxy_cycle),
                timeout=timeout,
                limiter=limiter,
                max_clients=max_clients,
            )
            for _ in range(sessions)
        ]
        self._clock = clock
        self._turn = itertools.cycle(self.sessions)
        self._failures: Counter[str | None] = Counter()
        self._benched_until: dict[str | None, float] = {}

    def pick(self) -> ChatGptEsSession:
        """The next session whose proxy is not benched (any session when all are)."""
        now = self._clock()
        for _ in range(len(self.sessions)):
            session = next(self._turn)
            if self._benched_until.get(session.proxy, 0.0) <= now:
                return session
        return next(self._turn)

    def report(self, session: ChatGptEsSession, error: ProviderError | None) -> None:
        """Count an attempt's outcome against the session's proxy."""
        if error is None or error.kind not in UNREACHABLE_KINDS:
            self._failures[session.proxy] = 0
            return
        self._failures[session.proxy] += 1
        if self._failures[session.proxy] >= BENCH_AFTER_FAILURES:
            self._failures[session.proxy] = 0
            self._benched_until[session.proxy] = self._clock() + BENCH_SECONDS

    @property
    def scrapes(self) -> int:
        return sum(session.scrapes for session in self.sessions)

    async def close(self) -> None:
        for session in self.sessions:
            await session.close()
