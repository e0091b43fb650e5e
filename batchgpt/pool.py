"""`ClientPool`: the run's clients (HTTP sessions), spread evenly over its proxies.

Each client keeps one proxy for life (its cookies and nonce belong to that IP). A proxy whose
requests keep failing to reach the service is benched for a while and its clients are skipped; when
every proxy is benched the pool hands out clients anyway and the circuit breaker does the pausing.
A proxy the service banned (`BlockedError`) is benched for the rest of the run; once every proxy
is banned the run stops (`SiteHaltedError`): without `--proxy` the direct connection is the one
proxy.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable

from batchgpt.errors import UNREACHABLE_KINDS, BlockedError, ProviderError, SiteHaltedError
from batchgpt.providers.base import ChatClient
from batchgpt.redact import redact

BENCH_AFTER_FAILURES = 3
BENCH_SECONDS = 30.0

#: Opens one client through a proxy (None: direct), allowed `max_clients` connections.
ClientFactory = Callable[..., ChatClient]


class ClientPool:
    def __init__(
        self,
        factory: ClientFactory,
        *,
        sessions: int,
        proxies: list[str],
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        proxy_cycle = itertools.cycle(proxies or [None])
        self.clients = [
            factory(next(proxy_cycle), max_clients=max_clients) for _ in range(sessions)
        ]
        self._clock = clock
        self._turn = itertools.cycle(self.clients)
        self._failures: Counter[str | None] = Counter()
        self._benched_until: dict[str | None, float] = {}
        self._banned: dict[str | None, str] = {}

    def pick(self) -> ChatClient:
        """The next client whose proxy is not benched (any unbanned client when all are)."""
        now = self._clock()
        usable = None
        for _ in range(len(self.clients)):
            client = next(self._turn)
            if client.proxy in self._banned:
                continue
            if self._benched_until.get(client.proxy, 0.0) <= now:
                return client
            usable = usable or client
        if usable is None:
            reasons = "; ".join(sorted(set(self._banned.values())))
            raise SiteHaltedError(
                f"stopped: the service banned every proxy ({reasons}); the prompts not yet "
                "answered are left for the next run"
            )
        return usable

    def report(self, client: ChatClient, error: ProviderError | None) -> None:
        """Count an attempt's outcome against the client's proxy."""
        proxy = client.proxy
        if isinstance(error, BlockedError):
            self._banned[proxy] = f"{redact(proxy) if proxy else 'direct'}: {error.message}"
            return
        if error is None or error.kind not in UNREACHABLE_KINDS:
            self._failures[proxy] = 0
            return
        self._failures[proxy] += 1
        if self._failures[proxy] >= BENCH_AFTER_FAILURES:
            self._failures[proxy] = 0
            self._benched_until[proxy] = self._clock() + BENCH_SECONDS

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
