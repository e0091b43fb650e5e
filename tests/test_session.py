"""`ChatGptEsSession` against the emulator over real loopback HTTP with the real curl_cffi client.

One scrape serves many prompts; concurrent first prompts share one scrape; a rejected nonce is
scraped again and the prompt repeated once; a stale cached nonce ends in `NonceError`; a Cloudflare
challenge retires the cookie jar.
"""

from __future__ import annotations

import asyncio

import pytest

from batchgpt.emulator import NONCE_FAILURES, expected_answer
from batchgpt.errors import (
    CloudflareChallengeError,
    NonceError,
    NoNonceError,
    SiteError,
)
from batchgpt.pacing import Pacer
from batchgpt.providers import ChatGptEsSession

# The legacy chat, answering in JSON (streaming off), as these tests were written for it.
pytestmark = pytest.mark.emulator_config(chat="legacy", stream=False)

MARKUPS_WITH_NONCE = ["data-nonce", "wpaicgParams", "hidden-input", "script-var"]


@pytest.mark.parametrize("markup", MARKUPS_WITH_NONCE)
async def test_each_nonce_markup_is_found_and_accepted(emulator, markup: str) -> None:
    emulator.configure(nonce_markup=markup)
    async with emulator.session(timeout=5) as session:
        assert await session.send("Hola") == expected_answer("Hola")
    assert emulator.stats.nonce_failures == 0
    assert emulator.stats.gets == 1


@pytest.mark.parametrize("markup", ["data-nonce", "hidden-input", "script-var"])
async def test_the_scraped_post_id_is_sent(emulator, markup: str) -> None:
    emulator.configure(nonce_markup=markup, post_id="4242")
    async with emulator.session(timeout=5) as session:
        await session.send("Hola")
    assert emulator.stats.forms[0]["post_id"] == "4242"


async def test_one_scrape_serves_many_prompts(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        for n in range(8):
            assert await session.send(f"prompt {n}") == expected_answer(f"prompt {n}")
        assert (session.scrapes, session.posts) == (1, 8)
    assert emulator.stats.gets == 1
    assert emulator.stats.posts == 8
    assert emulator.stats.answers == 8
    assert len({form["_wpnonce"] for form in emulator.stats.forms}) == 1


async def test_one_cookie_jar_for_the_scrape_and_every_post(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        for n in range(3):
            await session.send(f"prompt {n}")
    cookies = {headers.get("cookie") for headers in emulator.stats.headers}
    assert len(cookies) == 1
    assert next(iter(cookies)).startswith("__cf_bm=")


async def test_concurrent_first_prompts_share_one_scrape(emulator) -> None:
    emulator.configure(latency=0.05)
    prompts = [f"prompt {n}" for n in range(20)]
    async with emulator.session(timeout=5, max_clients=20) as session:
        answers = await asyncio.gather(*(session.send(p) for p in prompts))
        assert session.scrapes == 1
    assert answers == [expected_answer(p) for p in prompts]
    assert emulator.stats.gets == 1
    assert emulator.stats.posts == 20


@pytest.mark.parametrize("failure", NONCE_FAILURES)
async def test_rotated_nonce_is_scraped_again_and_the_prompt_repeated(emulator, failure) -> None:
    emulator.configure(nonce_failure=failure)
    async with emulator.session(timeout=5) as session:
        assert await session.send("before") == expected_answer("before")
        emulator.emu.rotate_nonces()
        assert await session.send("after") == expected_answer("after")
        assert await session.send("again") == expected_answer("again")
        assert (session.scrapes, session.posts) == (2, 4)
    assert emulator.stats.gets == 2
    assert emulator.stats.posts == 4
    assert emulator.stats.nonce_failures == 1
    assert emulator.stats.answered["after"] == 1
    first, stale, fresh, _ = (form["_wpnonce"] for form in emulator.stats.forms)
    assert first == stale != fresh


async def test_concurrent_prompts_with_a_rotated_nonce_share_one_rescrape(emulator) -> None:
    async with emulator.session(timeout=5, max_clients=20) as session:
        await session.send("warm up")
        emulator.emu.rotate_nonces()
        prompts = [f"prompt {n}" for n in range(10)]
        answers = await asyncio.gather(*(session.send(p) for p in prompts))
    assert answers == [expected_answer(p) for p in prompts]
    assert emulator.stats.gets == 2
    assert emulator.stats.nonce_failures == 10


@pytest.mark.parametrize("failure", NONCE_FAILURES)
async def test_stale_page_nonce_ends_in_nonce_error_after_one_rescrape(emulator, failure) -> None:
    emulator.configure(stale_page_nonce=True, nonce_failure=failure)
    async with emulator.session(timeout=5) as session:
        with pytest.raises(NonceError) as info:
            await session.send("Hola")
        assert session.scrapes == 2
    assert info.value.retryable
    assert info.value.kind == "nonce"
    assert emulator.stats.gets == 2
    assert emulator.stats.posts == 2
    assert emulator.stats.nonce_failures == 2
    assert emulator.stats.answers == 0


async def test_stale_page_nonce_in_a_stream_ends_in_nonce_error(emulator) -> None:
    emulator.configure(stale_page_nonce=True, stream=True)
    async with emulator.session(timeout=5) as session:
        with pytest.raises(NonceError):
            async for _ in session.stream("Hola"):
                pass
    assert (emulator.stats.gets, emulator.stats.posts) == (2, 2)


@pytest.mark.emulator_config(nonce_markup="none")
async def test_page_without_nonce_fails_before_any_post(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        with pytest.raises(NoNonceError) as info:
            await session.send("Hola")
    assert not info.value.retryable
    assert info.value.kind == "no_nonce"
    assert emulator.url in str(info.value)
    assert emulator.stats.gets == 1
    assert emulator.stats.posts == 0


async def test_page_without_nonce_is_scraped_again_on_the_next_prompt(emulator) -> None:
    emulator.configure(nonce_markup="none")
    async with emulator.session(timeout=5) as session:
        with pytest.raises(NoNonceError):
            await session.send("Hola")
        emulator.configure(nonce_markup="data-nonce")
        assert await session.send("Hola") == expected_answer("Hola")
    assert emulator.stats.gets == 2


async def test_challenge_retires_the_cookie_jar(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        assert await session.send("one") == expected_answer("one")
        emulator.configure(challenge_rate=1.0)
        with pytest.raises(CloudflareChallengeError) as info:
            await session.send("two")
        assert info.value.retryable
        assert info.value.kind == "cloudflare"
        emulator.configure(challenge_rate=0.0)
        # The emulator keeps refusing the challenged cookie: only a fresh jar gets through.
        assert await session.send("three") == expected_answer("three")
        assert await session.send("four") == expected_answer("four")
    assert emulator.stats.gets == 2
    assert emulator.stats.challenges == 1
    one, two, three, four = (headers["cookie"] for headers in emulator.stats.headers)
    assert one == two != three == four


async def test_challenge_on_the_page_raises_before_any_post(emulator) -> None:
    emulator.configure(challenge_rate=1.0)
    async with emulator.session(timeout=5) as session:
        with pytest.raises(CloudflareChallengeError):
            await session.send("Hola")
        emulator.configure(challenge_rate=0.0)
        assert await session.send("Hola") == expected_answer("Hola")
    assert emulator.stats.posts == 1


@pytest.mark.emulator_config(stream=True)
async def test_stream_yields_pieces_of_the_answer(emulator) -> None:
    assert emulator.config.stream
    message = "Tell me a long story, please, with many words in it."
    async with emulator.session(timeout=5) as session:
        pieces = [piece async for piece in session.stream(message)]
    assert len(pieces) > 1
    assert "".join(pieces) == expected_answer(message)


async def test_stream_from_a_site_that_does_not_stream_yields_the_whole_answer(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        pieces = [piece async for piece in session.stream("Hola")]
    assert pieces == [expected_answer("Hola")]


async def test_ask_on_a_streaming_site_joins_the_stream(emulator) -> None:
    emulator.configure(stream=True)
    async with emulator.session(timeout=5) as session:
        assert await session.send("Hola") == expected_answer("Hola")


@pytest.mark.parametrize("failure", NONCE_FAILURES)
async def test_stream_rescrapes_a_rotated_nonce(emulator, failure: str) -> None:
    emulator.configure(stream=True, nonce_failure=failure)
    async with emulator.session(timeout=5) as session:
        assert "".join([p async for p in session.stream("one")]) == expected_answer("one")
        emulator.emu.rotate_nonces()
        assert "".join([p async for p in session.stream("two")]) == expected_answer("two")
    assert (emulator.stats.gets, emulator.stats.posts) == (2, 3)


async def test_stream_and_ask_share_the_session(emulator) -> None:
    emulator.configure(stream=True)
    async with emulator.session(timeout=5) as session:
        streamed = [p async for p in session.stream("one")]
        answer = await session.send("two")
        streamed_again = [p async for p in session.stream("three")]
    assert "".join(streamed) == expected_answer("one")
    assert answer == expected_answer("two")
    assert "".join(streamed_again) == expected_answer("three")
    assert emulator.stats.gets == 1


async def test_stream_site_refusal_is_raised(emulator) -> None:
    emulator.configure(stream=True)
    async with emulator.session(timeout=5) as session:
        with pytest.raises(SiteError, match="prohibited"):
            async for _ in session.stream("[site-error] Hola"):
                pass


class CountingLimiter(Pacer):
    """A real `Pacer` that also counts how often it was entered."""

    def __init__(self) -> None:
        super().__init__(1000)
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1
        await super().acquire()


async def test_every_request_passes_the_rate_limiter(emulator) -> None:
    limiter = CountingLimiter()
    async with emulator.session(timeout=5, limiter=limiter) as session:
        for n in range(3):
            await session.send(f"prompt {n}")
        emulator.emu.rotate_nonces()
        await session.send("after rotation")
    # GET, 3 POSTs, then the rejected POST, the second GET and the repeated POST.
    assert limiter.acquired == 7
    assert emulator.stats.gets + emulator.stats.posts == 7


async def test_session_can_be_closed_twice_and_reopened(emulator) -> None:
    session = emulator.session(timeout=5)
    assert await session.send("one") == expected_answer("one")
    await session.close()
    await session.close()
    assert await session.send("two") == expected_answer("two")
    await session.close()


async def test_trailing_slash_in_the_url(emulator) -> None:
    async with ChatGptEsSession(emulator.url + "/", timeout=5) as session:
        assert session.url == emulator.url
        assert await session.send("Hola") == expected_answer("Hola")
