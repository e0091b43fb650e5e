"""`ChatGptEsSession` on the AIPKit chat (plugin 2.3 and 2.4.71) over real loopback HTTP.

One scrape serves many prompts; every prompt is a cache POST and one stream GET with a fresh
conversation and the session's one guest id; a failed nonce is refreshed through the page's refresh
action (2.4.71) or the page (2.3) and the prompt repeated once; a lost cache key is cached again
once; every error text of the plugin arrives as its error; the generation is read from the page,
forced with `chat`, and switched when the site answers 400 "0".
"""

from __future__ import annotations

import asyncio

import pytest

from batchgpt.emulator import expected_answer
from batchgpt.errors import (
    BadResponseError,
    BlockedError,
    CaptchaError,
    CloudflareChallengeError,
    NonceError,
    NoNonceError,
    QuotaError,
    RateLimitedError,
    ServerError,
    SiteError,
)
from batchgpt.providers import ChatGptEsSession
from batchgpt.providers.chatgpt_es.session import MissingBotError, RequestRecord

pytestmark = pytest.mark.emulator_config(chat="aipkit")
PLUGINS = pytest.mark.parametrize("plugin", ["2.3", "2.4.71"])


@PLUGINS
async def test_one_scrape_serves_many_prompts(emulator, plugin: str) -> None:
    emulator.configure(plugin=plugin)
    async with emulator.session(timeout=5) as session:
        for n in range(6):
            assert await session.send(f"prompt {n}") == expected_answer(f"prompt {n}")
        assert session.generation == "aipkit"
        assert (session.scrapes, session.posts, session.streams) == (1, 6, 6)
    stats = emulator.stats
    assert (stats.gets, stats.posts, stats.streams, stats.answers) == (1, 6, 6, 6)
    assert len({form["_ajax_nonce"] for form in stats.forms}) == 1


async def test_each_request_is_a_new_conversation_of_the_same_guest(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        answers = [await session.send("the same question") for _ in range(5)]
    assert answers == [expected_answer("the same question")] * 5  # no turn saw another
    queries = emulator.stats.queries
    assert len({q["conversation_uuid"] for q in queries}) == 5
    assert {q["session_id"] for q in queries} == {session.guest_id}
    assert all(len(turns) == 1 for turns in emulator.stats.conversations.values())


async def test_a_reused_conversation_would_change_the_answer(emulator) -> None:
    """What the emulator does to a client that keeps one conversation_uuid (a bug we avoid)."""
    from curl_cffi.requests import AsyncSession

    from batchgpt.providers.chatgpt_es.aipkit import cache_form, parse_stream, stream_query
    from batchgpt.providers.chatgpt_es.page import find_aipkit_chat

    async with AsyncSession(impersonate="chrome") as http:
        bot = find_aipkit_chat((await http.get(emulator.url)).content).bots[0]
        conversation = "11111111-2222-4333-8444-555555555555"
        answers = []
        for message in ("first", "second"):
            form = cache_form(bot, message)
            key = (await http.post(bot.ajax_url, data=form)).json()["data"]["cache_key"]
            query = {**stream_query(bot, key, "guest"), "conversation_uuid": conversation}
            reply = await http.get(bot.ajax_url, params=query)
            answers.append(parse_stream(reply.status_code, dict(reply.headers), reply.content))
    assert answers[0] == expected_answer("first")
    assert answers[1] == expected_answer("second", ["first"]) != expected_answer("second")


async def test_concurrent_first_prompts_share_one_scrape(emulator) -> None:
    emulator.configure(latency=0.05)
    prompts = [f"prompt {n}" for n in range(16)]
    async with emulator.session(timeout=5, max_clients=16) as session:
        answers = await asyncio.gather(*(session.send(p) for p in prompts))
    assert answers == [expected_answer(p) for p in prompts]
    assert (emulator.stats.gets, emulator.stats.streams) == (1, 16)


async def test_a_rotated_nonce_is_refreshed_by_the_action_on_2_4_71(emulator) -> None:
    async with emulator.session(timeout=5, max_clients=10) as session:
        await session.send("warm up")
        emulator.emu.rotate_nonces()
        prompts = [f"prompt {n}" for n in range(8)]
        answers = await asyncio.gather(*(session.send(p) for p in prompts))
        assert answers == [expected_answer(p) for p in prompts]
        assert (session.scrapes, session.refreshes) == (1, 1)  # one refresh for all of them
    assert emulator.stats.gets == 1
    assert emulator.stats.refreshes == 1


async def test_a_rotated_nonce_is_scraped_again_on_2_3(emulator) -> None:
    emulator.configure(plugin="2.3")
    async with emulator.session(timeout=5) as session:
        await session.send("warm up")
        emulator.emu.rotate_nonces()
        assert await session.send("after") == expected_answer("after")
        assert (session.scrapes, session.refreshes) == (2, 0)
    assert emulator.stats.refreshes == 0


async def test_a_nonce_failing_at_the_stream_is_refreshed_too(emulator) -> None:
    """The nonce is checked by the cache POST and again by the stream GET."""
    async with emulator.session(timeout=5) as session:
        await session.send("warm up")
        cached = len(emulator.stats.forms)
        emulator.configure(latency=0.3)
        task = asyncio.create_task(session.send("slow"))
        while len(emulator.stats.forms) == cached:  # cached with the good nonce
            await asyncio.sleep(0.001)
        emulator.emu.rotate_nonces()  # ...which the stream GET then refuses
        assert await task == expected_answer("slow")


@PLUGINS
async def test_a_stale_page_nonce(emulator, plugin: str) -> None:
    """A page cache serves an old nonce: 2.4.71's refresh action cures it, 2.3 cannot."""
    emulator.configure(plugin=plugin, stale_page_nonce=True)
    async with emulator.session(timeout=5) as session:
        if plugin == "2.4.71":
            assert await session.send("Hola") == expected_answer("Hola")
            assert await session.send("again") == expected_answer("again")
            assert (session.scrapes, session.refreshes) == (1, 1)
        else:
            with pytest.raises(NonceError) as info:
                await session.send("Hola")
            assert info.value.retryable
            assert session.scrapes == 2


async def test_a_lost_cache_key_is_cached_once_more_then_it_is_a_bad_response(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        emulator.configure(lose_cache_keys=1)
        assert await session.send("one") == expected_answer("one")
        assert (session.posts, session.streams) == (2, 2)
        emulator.configure(lose_cache_keys=2)
        with pytest.raises(BadResponseError, match="not found in cache") as info:
            await session.send("two")
        assert info.value.retryable


async def test_a_cache_key_is_single_use_and_expires(emulator) -> None:
    emulator.configure(cache_ttl=0.0)
    async with emulator.session(timeout=5) as session:
        with pytest.raises(BadResponseError, match="not found in cache"):
            await session.send("expired at once")
    assert emulator.stats.posts == emulator.stats.streams == 2


@pytest.mark.parametrize(
    ("setup", "message", "error"),
    [
        ({}, "[site-error] hola", SiteError),
        ({}, "[captcha] hola", CaptchaError),
        ({}, "[ai-429] hola", RateLimitedError),
        ({}, "[ai-500] hola", ServerError),
        ({"truncate_rate": 1.0}, "hola", BadResponseError),
        ({"banned_via": "1.1 proxy"}, "hola", None),
    ],
    ids=["prohibited", "captcha", "ai-429", "ai-500", "cut", "not-banned-without-proxy"],
)
async def test_site_answers_arrive_as_their_errors(emulator, setup, message, error) -> None:
    emulator.configure(**setup)
    async with emulator.session(timeout=5) as session:
        if error is None:
            assert await session.send(message) == expected_answer(message)
            return
        with pytest.raises(error) as info:
            await session.send(message)
    assert "\n" not in info.value.message


@PLUGINS
async def test_the_guest_quota(emulator, plugin: str) -> None:
    emulator.configure(plugin=plugin, guest_quota=2)
    async with emulator.session(timeout=5) as session:
        await session.send("one")
        await session.send("two")
        with pytest.raises(QuotaError, match=r"quota|token limit") as info:
            await session.send("three")
    assert info.value.halts_after == 1
    assert list(emulator.stats.guests.values()) == [3]  # never a new guest id to get round it


async def test_a_new_session_keeps_its_guest_id_when_given_one(emulator) -> None:
    emulator.configure(guest_quota=1)
    async with emulator.session(timeout=5, guest_id="guest-a") as session:
        await session.send("one")
    async with emulator.session(timeout=5, guest_id="guest-a") as session:
        with pytest.raises(QuotaError):
            await session.send("two")


async def test_a_banned_ip_is_a_blocked_error(emulator) -> None:
    from support import ForwardProxy, running_proxy

    emulator.configure(banned_via="proxy-a")
    with running_proxy(ForwardProxy(via="proxy-a")) as (_proxy, url):
        async with emulator.session(timeout=5, proxy=url) as session:
            with pytest.raises(BlockedError, match="blocked"):
                await session.send("hola")


async def test_stream_yields_the_deltas_as_they_arrive(emulator) -> None:
    message = "Tell me a long story, please, with many words in it."
    async with emulator.session(timeout=5) as session:
        pieces = [piece async for piece in session.stream(message)]
    assert len(pieces) > 3
    assert "".join(pieces) == expected_answer(message)


async def test_stream_refreshes_a_rotated_nonce_and_recaches_a_lost_key(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        assert "".join([p async for p in session.stream("one")]) == expected_answer("one")
        emulator.emu.rotate_nonces()
        assert "".join([p async for p in session.stream("two")]) == expected_answer("two")
        emulator.configure(lose_cache_keys=1)
        assert "".join([p async for p in session.stream("three")]) == expected_answer("three")
    assert emulator.stats.refreshes == 1


async def test_stream_raises_the_sites_refusal(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        with pytest.raises(SiteError, match="prohibited"):
            async for _ in session.stream("[site-error] hola"):
                pass


# which chat -----------------------------------------------------------------------------------


@pytest.mark.emulator_config(bots="4,7")
async def test_the_first_bot_unless_one_is_named(emulator) -> None:
    async with (
        emulator.session(timeout=5) as first,
        emulator.session(timeout=5, bot_id=7) as second,
    ):
        await first.send("to the first")
        await second.send("to bot 7")
    assert [form["bot_id"] for form in emulator.stats.forms] == ["4", "7"]
    assert [query["bot_id"] for query in emulator.stats.queries] == ["4", "7"]


async def test_a_named_bot_missing_from_the_page_sends_nothing(emulator) -> None:
    async with emulator.session(timeout=5, bot_id=9) as session:
        with pytest.raises(MissingBotError, match="bot 9 is not on"):
            await session.send("hola")
    assert (emulator.stats.gets, emulator.stats.posts) == (1, 0)


@pytest.mark.parametrize("mode", ["inline", "popup"])
async def test_inline_and_popup_bots_answer(emulator, mode: str) -> None:
    emulator.configure(bot_mode=mode)
    async with emulator.session(timeout=5) as session:
        assert await session.send("hola") == expected_answer("hola")


@pytest.mark.parametrize(("site", "forced"), [("aipkit", "legacy"), ("legacy", "aipkit")])
async def test_a_forced_generation_the_page_lacks_is_no_nonce(emulator, site, forced) -> None:
    emulator.configure(chat=site)
    async with emulator.session(timeout=5, chat=forced) as session:
        with pytest.raises(NoNonceError, match=f"--chat {forced}"):
            await session.send("hola")
    assert emulator.stats.posts == 0


async def test_forcing_the_generation_the_page_has_works(emulator) -> None:
    async with emulator.session(timeout=5, chat="aipkit") as session:
        assert await session.send("hola") == expected_answer("hola")


async def test_a_site_that_updates_its_plugin_is_followed(emulator) -> None:
    """The legacy chat answers 400 "0" once the plugin is 2.3: the page is read again and the
    prompt is sent the AIPKit way, once, without an error."""
    emulator.configure(chat="legacy")
    async with emulator.session(timeout=5) as session:
        assert await session.send("before") == expected_answer("before")
        assert session.generation == "legacy"
        emulator.configure(chat="aipkit")
        assert await session.send("after") == expected_answer("after")
        assert session.generation == "aipkit"
    assert emulator.stats.gets == 2


async def test_the_page_ajax_url_is_used_not_the_page_path(emulator) -> None:
    async with ChatGptEsSession(emulator.url + "/chat/", timeout=5) as session:
        assert await session.send("hola") == expected_answer("hola")
    assert emulator.stats.headers[0]["referer"] == emulator.url + "/chat/"


async def test_a_challenge_retires_the_jar_but_not_the_guest(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        await session.send("one")
        emulator.configure(challenge_rate=1.0)
        with pytest.raises(CloudflareChallengeError):
            await session.send("two")
        emulator.configure(challenge_rate=0.0)
        assert await session.send("three") == expected_answer("three")
    assert len({q["session_id"] for q in emulator.stats.queries}) == 1
    cookies = [headers.get("cookie") for headers in emulator.stats.headers]
    assert cookies[0] != cookies[-1]


@pytest.mark.parametrize("chat", ["legacy", "aipkit"])
async def test_every_answer_is_capped(emulator, chat: str) -> None:
    emulator.configure(chat=chat, answer_padding=50_000)
    async with emulator.session(timeout=5, max_answer_bytes=20_000) as session:
        with pytest.raises(BadResponseError, match="larger than 20000 bytes") as info:
            await session.send("hola")
        assert info.value.retryable
        emulator.configure(answer_padding=100)  # the cap counts the bytes on the wire
        assert await session.send("hola") == expected_answer("hola", padding=100)


async def test_each_request_is_reported_with_its_status_and_time(emulator) -> None:
    seen: list[RequestRecord] = []
    async with emulator.session(timeout=5, on_request=seen.append) as session:
        await session.send("hola")
    assert [(r.kind, r.method, r.status) for r in seen] == [
        ("page", "GET", 200),
        ("cache", "POST", 200),
        ("stream", "GET", 200),
    ]
    assert all(r.seconds >= 0 for r in seen)
