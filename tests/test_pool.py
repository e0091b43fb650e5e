"""`ClientPool`: clients spread round-robin over the proxies, a proxy benched after failures in a
row (on a fake clock), banned for the run on a `BlockedError`, and the run halted once every proxy
is banned.

The pool never does HTTP itself, so most tests fill it with `Client`, a small class implementing
the `ChatClient` protocol; the last tests fill it with real sessions through real proxies on
loopback.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fake_clock import FakeClock
from support import running_proxy

from batchgpt.config import RunConfig
from batchgpt.errors import (
    BlockedError,
    CaptchaError,
    ProviderError,
    RateLimitedError,
    ServerError,
    SiteHaltedError,
    TransportError,
)
from batchgpt.pool import BENCH_AFTER_FAILURES, BENCH_SECONDS, ClientPool
from batchgpt.providers import backend_class
from batchgpt.providers.base import Answer

DOWN = TransportError("connection refused")


class Client:
    """A `ChatClient` that answers nothing; it only knows its proxy and whether it was closed."""

    def __init__(self, proxy: str | None, *, max_clients: int) -> None:
        self.proxy = proxy
        self.max_clients = max_clients
        self.closed = False

    async def ask(self, messages: Any, model: str, params: Any = None) -> Answer:
        raise NotImplementedError("the pool never asks")

    async def close(self) -> None:
        self.closed = True


def pool_of(
    proxies: list[str], sessions: int, clock: FakeClock | None = None
) -> tuple[ClientPool, list[Client]]:
    pool = ClientPool(
        Client, sessions=sessions, proxies=proxies, max_clients=3, clock=clock or FakeClock()
    )
    return pool, pool.clients  # type: ignore[return-value]


def picked_proxies(pool: ClientPool, count: int) -> list[str | None]:
    return [pool.pick().proxy for _ in range(count)]


def fail(pool: ClientPool, client: Client, error: ProviderError, times: int) -> None:
    for _ in range(times):
        pool.report(client, error)


# spreading --------------------------------------------------------------------------------------


def test_sessions_are_spread_round_robin_over_the_proxies() -> None:
    pool, clients = pool_of(["http://a:1", "http://b:2"], sessions=5)
    assert [c.proxy for c in clients] == ["http://a:1", "http://b:2"] * 2 + ["http://a:1"]
    assert {c.max_clients for c in clients} == {3}
    assert [pool.pick() for _ in range(10)] == clients * 2


def test_without_proxies_every_session_is_direct() -> None:
    pool, clients = pool_of([], sessions=3)
    assert [c.proxy for c in clients] == [None, None, None]
    assert [pool.pick() for _ in range(3)] == clients


async def test_close_closes_every_client() -> None:
    pool, clients = pool_of(["http://a:1"], sessions=3)
    await pool.close()
    assert all(client.closed for client in clients)


# benching ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [DOWN, ServerError("HTTP 503", http_status=503)], ids=str)
def test_a_proxy_failing_in_a_row_is_benched_for_a_while(error: ProviderError) -> None:
    clock = FakeClock()
    pool, (a, _) = pool_of(["http://a:1", "http://b:2"], sessions=2, clock=clock)

    fail(pool, a, error, BENCH_AFTER_FAILURES - 1)
    assert picked_proxies(pool, 4) == ["http://a:1", "http://b:2"] * 2  # not yet
    fail(pool, a, error, 1)
    assert picked_proxies(pool, 4) == ["http://b:2"] * 4
    clock.advance(BENCH_SECONDS - 0.1)
    assert picked_proxies(pool, 2) == ["http://b:2"] * 2
    clock.advance(0.1)
    assert set(picked_proxies(pool, 4)) == {"http://a:1", "http://b:2"}


@pytest.mark.parametrize(
    "between",
    [None, CaptchaError("gate"), RateLimitedError("slow down")],
    ids=["answer", "captcha", "rate_limited"],
)
def test_an_answer_or_an_error_that_reached_the_site_ends_the_run_of_failures(
    between: ProviderError | None,
) -> None:
    pool, (a, _) = pool_of(["http://a:1", "http://b:2"], sessions=2)
    fail(pool, a, DOWN, BENCH_AFTER_FAILURES - 1)
    pool.report(a, between)
    fail(pool, a, DOWN, BENCH_AFTER_FAILURES - 1)
    assert "http://a:1" in picked_proxies(pool, 2)


def test_failures_count_per_proxy_not_per_session() -> None:
    pool, (a1, _, a2, _) = pool_of(["http://a:1", "http://b:2"], sessions=4)
    fail(pool, a1, DOWN, 2)
    fail(pool, a2, DOWN, 1)
    assert set(picked_proxies(pool, 8)) == {"http://b:2"}


def test_when_every_proxy_is_benched_the_pool_hands_out_clients_anyway() -> None:
    pool, (a, b) = pool_of(["http://a:1", "http://b:2"], sessions=2)
    fail(pool, a, DOWN, BENCH_AFTER_FAILURES)
    fail(pool, b, DOWN, BENCH_AFTER_FAILURES)
    assert {pool.pick() for _ in range(4)} <= {a, b}  # the breaker does the pausing


# banning ----------------------------------------------------------------------------------------


def test_a_banned_proxy_is_out_for_the_rest_of_the_run() -> None:
    clock = FakeClock()
    pool, (a, _) = pool_of(["http://a:1", "http://b:2"], sessions=2, clock=clock)
    pool.report(a, BlockedError("your IP is banned", http_status=403))
    assert picked_proxies(pool, 4) == ["http://b:2"] * 4
    pool.report(a, None)  # a late answer through it changes nothing
    clock.advance(100 * BENCH_SECONDS)
    assert picked_proxies(pool, 4) == ["http://b:2"] * 4


def test_a_ban_beats_a_bench_and_every_proxy_banned_halts_the_run_naming_them() -> None:
    pool, (a, b) = pool_of(["http://user:secret@a:1", "http://b:2"], sessions=2)
    fail(pool, b, DOWN, BENCH_AFTER_FAILURES)
    pool.report(a, BlockedError("banned here"))
    assert pool.pick() is b  # benched, but the only one not banned
    pool.report(b, BlockedError("banned there"))
    with pytest.raises(SiteHaltedError) as caught:
        pool.pick()
    message = caught.value.message
    assert caught.value.exit_code == 69
    assert "http://***@a:1: banned here" in message
    assert "http://b:2: banned there" in message
    assert "secret" not in message
    assert "left for the next run" in message


def test_without_proxies_a_ban_of_the_direct_connection_halts_the_run() -> None:
    pool, (direct,) = pool_of([], sessions=1)
    pool.report(direct, BlockedError("IP blocked"))
    with pytest.raises(SiteHaltedError, match="direct: IP blocked"):
        pool.pick()


# real sessions ----------------------------------------------------------------------------------


def backend_pool(url: str, tmp: Path, proxies: list[str], sessions: int) -> ClientPool:
    """A pool of the chatgpt-es backend's own sessions, as the runner builds it."""
    config = RunConfig.build({"input": tmp / "prompts.jsonl", "base_url": url})
    backend = backend_class(config.provider)(config, None)
    return ClientPool(backend.client, sessions=sessions, proxies=proxies, max_clients=2)


async def ask_through(pool: ClientPool, prompt: str) -> tuple[str | None, Answer | ProviderError]:
    """One attempt as the runner makes it: pick, ask, report."""
    client = pool.pick()
    try:
        answer = await client.ask([{"role": "user", "content": prompt}], "gpt-4o")
    except ProviderError as error:
        pool.report(client, error)
        return client.proxy, error
    pool.report(client, None)
    return client.proxy, answer


async def test_real_sessions_keep_their_proxy_and_their_cookie_jar(emulator, tmp: Path) -> None:
    with running_proxy() as (first, first_url), running_proxy() as (second, second_url):
        pool = backend_pool(emulator.url, tmp, [first_url, second_url], sessions=4)
        try:
            outcomes = [await ask_through(pool, f"prompt {n}") for n in range(12)]
        finally:
            await pool.close()
    assert all(isinstance(outcome, Answer) for _, outcome in outcomes)
    assert [proxy for proxy, _ in outcomes] == [first_url, second_url] * 6
    stats = emulator.stats
    assert (stats.gets, stats.posts) == (4, 12)  # one scrape per session, then its nonce
    assert first.requests == second.requests == stats.requests // 2  # two sessions each
    cookies = Counter(headers["cookie"] for headers in stats.headers)
    assert len(cookies) == 4  # each session kept its own jar...
    assert len(set(cookies.values())) == 1  # ...for all of its requests


async def test_a_dead_proxy_is_benched_and_the_live_one_answers_the_rest(
    emulator, tmp: Path, closed_port: int
) -> None:
    dead = f"http://127.0.0.1:{closed_port}"
    with running_proxy() as (live, live_url):
        pool = backend_pool(emulator.url, tmp, [dead, live_url], sessions=2)
        try:
            outcomes = [await ask_through(pool, f"prompt {n}") for n in range(10)]
        finally:
            await pool.close()
    failed = [proxy for proxy, outcome in outcomes if isinstance(outcome, ProviderError)]
    assert failed == [dead] * BENCH_AFTER_FAILURES
    assert all(isinstance(outcome, TransportError) for proxy, outcome in outcomes if proxy == dead)
    after_bench = outcomes[2 * BENCH_AFTER_FAILURES - 1 :]
    assert {proxy for proxy, _ in after_bench} == {live_url}
    answers = [outcome for _, outcome in outcomes if isinstance(outcome, Answer)]
    assert len(answers) == 10 - BENCH_AFTER_FAILURES
    assert live.requests == emulator.stats.requests
