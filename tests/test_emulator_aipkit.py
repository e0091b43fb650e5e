"""The emulator's AIPKit chat speaks PROTOCOL.md §B as the real plugin does (2.3 and 2.4.71):
checked with raw curl_cffi requests, the way the plugin's own script makes them."""

from __future__ import annotations

import html
import json
import re
import time

import pytest
from curl_cffi.requests import AsyncSession

from batchgpt.emulator import AJAX_PATH, expected_answer

pytestmark = pytest.mark.emulator_config(chat="aipkit")
PLUGINS = pytest.mark.parametrize("plugin", ["2.3", "2.4.71"])
CONFIGS = re.compile(r"""<div ([^<>]*)data-config='([^']*)'""")


def browser() -> AsyncSession:
    return AsyncSession(impersonate="chrome")


async def bot_config(http: AsyncSession, url: str) -> tuple[str, dict]:
    page = (await http.get(url)).text
    attributes, config = CONFIGS.search(page).groups()
    return attributes, json.loads(html.unescape(config))


async def cache(http: AsyncSession, url: str, nonce: str, message: str = "Hola", **extra):
    form = {"action": "aipkit_cache_sse_message", "message": message, "_ajax_nonce": nonce}
    return await http.post(url + AJAX_PATH, data={**form, "bot_id": "4", **extra})


def query(key: str, nonce: str, **overrides: str) -> dict[str, str]:
    base = {
        "action": "aipkit_frontend_chat_stream",
        "cache_key": key,
        "bot_id": "4",
        "session_id": "0b9e9d54-1111-4222-8333-444455556666",
        "conversation_uuid": f"c0ffee00-0000-4000-8000-{time.monotonic_ns() % 10**12:012d}",
        "post_id": "106",
        "_ts": str(int(time.time() * 1000)),
        "_ajax_nonce": nonce,
    }
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def events(body: bytes) -> list[tuple[str, dict]]:
    """(event name, data) of each event; unnamed events are 'message'."""
    found = []
    for block in body.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name = next((line[7:] for line in lines if line.startswith("event: ")), "message")
        data = next(line[6:] for line in lines if line.startswith("data: "))
        found.append((name, json.loads(data)))
    return found


async def ask(http: AsyncSession, url: str, message: str = "Hola", **overrides: str):
    _, config = await bot_config(http, url)
    key = (await cache(http, url, config["nonce"], message)).json()["data"]["cache_key"]
    return await http.get(url + AJAX_PATH, params=query(key, config["nonce"], **overrides))


# the page ---------------------------------------------------------------------------------------


@PLUGINS
async def test_the_page_shows_the_bot_as_the_plugin_does(emulator, plugin: str) -> None:
    emulator.configure(plugin=plugin)
    async with browser() as http:
        attributes, config = await bot_config(http, emulator.url)
        page = (await http.get(emulator.url)).text
    wrapper = "aipkit_popup_wrapper" if plugin == "2.4.71" else "aipkit_chat_container"
    assert wrapper in attributes  # 2.4.71's default bot is a popup, 2.3's inline
    assert config["botId"] == 4 and config["postId"] == 106
    assert re.fullmatch(r"[0-9a-f]{10}", config["nonce"])
    assert config["ajaxUrl"] == emulator.url + AJAX_PATH
    assert "&quot;" in page and "\\/wp-admin\\/admin-ajax.php" in html.unescape(page)
    advertised = 'window.aipkit_getChatNonceAction = "aipkit_get_frontend_chat_nonce"'
    assert (advertised in page) == (plugin == "2.4.71")


async def test_a_popup_inner_container_carries_no_config(emulator) -> None:
    emulator.configure(bot_mode="popup")
    async with browser() as http:
        page = (await http.get(emulator.url)).text
    inner = re.search(r'<div class="aipkit_chat_container[^>]*>', page).group(0)
    assert "data-config" not in inner


async def test_several_bots_on_one_page(emulator) -> None:
    emulator.configure(bots="4,7,9", bot_mode="inline")
    async with browser() as http:
        page = (await http.get(emulator.url)).text
    ids = [json.loads(html.unescape(c))["botId"] for _, c in CONFIGS.findall(page)]
    assert ids == [4, 7, 9]


@pytest.mark.parametrize("decoys", ["before", "after"])
async def test_the_decoy_nonce_of_another_plugin(emulator, decoys: str) -> None:
    emulator.configure(decoys=decoys)
    async with browser() as http:
        page = (await http.get(emulator.url)).text
    decoy, chat = page.index('{"nonce":"0000000000"}'), page.index("data-config")
    assert (decoy < chat) == (decoys == "before")
    async with emulator.session(timeout=5) as session:
        assert await session.send("Hola") == expected_answer("Hola")


async def test_the_nonce_is_the_same_for_every_visitor(emulator) -> None:
    async with browser() as first, browser() as second:
        assert (await bot_config(first, emulator.url))[1]["nonce"] == (
            await bot_config(second, emulator.url)
        )[1]["nonce"]


# step 1: the cache POST ---------------------------------------------------------------------------


async def test_a_cache_key_is_32_characters_and_single_use(emulator) -> None:
    async with browser() as http:
        _, config = await bot_config(http, emulator.url)
        reply = await cache(http, emulator.url, config["nonce"])
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/json")
        key = reply.json()["data"]["cache_key"]
        assert re.fullmatch(r"aipkit_sse_[A-Za-z0-9]{32}", key)
        first = await http.get(emulator.url + AJAX_PATH, params=query(key, config["nonce"]))
        again = await http.get(emulator.url + AJAX_PATH, params=query(key, config["nonce"]))
    assert events(first.content)[-1] == ("done", {"finished": True})
    assert events(again.content) == [
        ("error", {"error": "Message not found in cache."}),
        ("done", {"finished": True}),
    ]


@pytest.mark.parametrize(
    ("nonce", "message", "status", "code"),
    [
        ("0123456789", "Hola", 403, "nonce_failure_cache_sse"),
        (None, "", 400, "empty_data_to_cache"),
    ],
)
async def test_cache_refusals(emulator, nonce, message, status, code) -> None:
    async with browser() as http:
        _, config = await bot_config(http, emulator.url)
        reply = await cache(http, emulator.url, nonce or config["nonce"], message)
    assert reply.status_code == status
    assert reply.json()["success"] is False and reply.json()["data"]["code"] == code


@PLUGINS
async def test_a_cross_origin_cache_post(emulator, plugin: str) -> None:
    """2.4.71 refuses embeds on the free plan; 2.3 did not check the Origin at all."""
    emulator.configure(plugin=plugin)
    async with browser() as http:
        reply = await http.post(
            emulator.url + AJAX_PATH,
            data={"action": "aipkit_cache_sse_message", "message": "x", "_ajax_nonce": "x"},
            headers={"origin": "https://elsewhere.example"},
        )
    if plugin == "2.4.71":
        assert (reply.status_code, reply.json()["data"]["code"]) == (403, "embed_not_available")
    else:
        assert reply.json()["data"]["code"] == "nonce_failure_cache_sse"


# step 2: the answer stream ------------------------------------------------------------------------


@PLUGINS
async def test_the_answer_stream(emulator, plugin: str) -> None:
    emulator.configure(plugin=plugin)
    async with browser() as http:
        reply = await ask(http, emulator.url)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert reply.headers["x-accel-buffering"] == "no"
    assert reply.content.startswith(b":" + b" " * 4096 + b"\n\n") == (plugin == "2.4.71")
    names = [name for name, _ in events(reply.content)]
    status = ["status", "status"] if plugin == "2.4.71" else []
    deltas = [name for name in names if name == "message"]
    assert names == ["message_start", *status, *deltas, "openai_response_id", "done"]
    text = "".join(data["delta"] for name, data in events(reply.content) if name == "message")
    assert text == expected_answer("Hola")


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"cache_key": ""}, "Message cache key is missing."),
        ({"cache_key": "aipkit_sse_unknown"}, "Message not found in cache."),
        ({"conversation_uuid": None}, "Conversation ID is missing."),
        ({"session_id": None}, "Session ID is missing for guest."),
        ({"bot_id": "5"}, "Invalid chatbot specified."),
    ],
)
async def test_stream_refusals_end_with_done(emulator, overrides, text) -> None:
    async with browser() as http:
        reply = await ask(http, emulator.url, **overrides)
    assert reply.status_code == 200
    (error, payload), done = events(reply.content)
    assert (error, payload, done) == ("error", {"error": text}, ("done", {"finished": True}))
    assert re.search(rb"event: error\nid: err-\d+\n", reply.content)


@PLUGINS
async def test_a_bad_nonce_in_the_stream(emulator, plugin: str) -> None:
    emulator.configure(plugin=plugin)
    text = {
        "2.4.71": "Security check failed. Please refresh the page and try again.",
        "2.3": "Security check failed (nonce).",
    }[plugin]
    async with browser() as http:
        reply = await ask(http, emulator.url, _ajax_nonce="0123456789")
    assert events(reply.content) == [("error", {"error": text}), ("done", {"finished": True})]


@PLUGINS
async def test_the_guest_quota_is_kept_by_session_id(emulator, plugin: str) -> None:
    emulator.configure(plugin=plugin, guest_quota=1)
    async with browser() as http:
        first = await ask(http, emulator.url)
        second = await ask(http, emulator.url)
        other_guest = await ask(http, emulator.url, session_id="another-guest")
    assert events(first.content)[-1][0] == "done"
    error = events(second.content)[0][1]
    if plugin == "2.4.71":
        assert error["error"] == "You have reached your quota for this period."
        assert error["quota_notice"]["type"] == "quota_notice"
    else:
        assert error == {"error": "You have reached your token limit for this period."}
    assert events(other_guest.content)[-1][0] == "done"


async def test_the_server_keeps_the_conversation_and_logs_failed_turns_too(emulator) -> None:
    conversation = "feedface-0000-4000-8000-000000000001"
    async with browser() as http:
        await ask(http, emulator.url, "one", conversation_uuid=conversation)
        await ask(http, emulator.url, "[ai-500] two", conversation_uuid=conversation)
        reply = await ask(http, emulator.url, "three", conversation_uuid=conversation)
    text = "".join(data["delta"] for name, data in events(reply.content) if name == "message")
    assert text == expected_answer("three", ["one", "[ai-500] two"])
    assert emulator.stats.conversations[conversation] == ["one", "[ai-500] two", "three"]


@pytest.mark.parametrize(
    ("marker", "text"),
    [
        ("[ai-429]", "(Code: rate_limit_exceeded)"),
        ("[ai-500]", "API Error: The server had an error while processing your request."),
    ],
)
async def test_an_ai_failure_ends_the_stream_without_done(emulator, marker, text) -> None:
    async with browser() as http:
        reply = await ask(http, emulator.url, f"{marker} hola")
    found = events(reply.content)
    assert [name for name, _ in found] == ["message_start", "error"]
    assert found[1][1]["error"].endswith(text) or found[1][1]["error"] == text


async def test_prohibited_words_and_banned_ips(emulator) -> None:
    emulator.configure(banned_via="proxy-a")
    async with browser() as http:
        words = await ask(http, emulator.url, "[site-error] hola")
        _, config = await bot_config(http, emulator.url)
        key = (await cache(http, emulator.url, config["nonce"])).json()["data"]["cache_key"]
        banned = await http.get(
            emulator.url + AJAX_PATH,
            params=query(key, config["nonce"]),
            headers={"via": "1.1 proxy-a"},
        )
    assert events(words.content)[0][1]["error"].endswith("contains prohibited words.")
    assert events(banned.content)[0][1] == {
        "error": "Access from your IP address has been blocked."
    }


async def test_a_cut_stream_has_no_done(emulator) -> None:
    emulator.configure(truncate_rate=1.0)
    async with browser() as http:
        reply = await ask(http, emulator.url)
    assert "done" not in [name for name, _ in events(reply.content)]


# the nonce refresh and unknown actions ------------------------------------------------------------


@PLUGINS
async def test_the_nonce_refresh_action(emulator, plugin: str) -> None:
    emulator.configure(plugin=plugin)
    async with browser() as http:
        _, config = await bot_config(http, emulator.url)
        reply = await http.post(
            emulator.url + AJAX_PATH,
            data={"action": "aipkit_get_frontend_chat_nonce", "bot_id": "4"},
        )
    if plugin == "2.3":
        assert (reply.status_code, reply.content) == (400, b"0")
        return
    assert reply.status_code == 200
    assert reply.json() == {"success": True, "data": {"nonce": config["nonce"]}}
    assert reply.headers["cache-control"] == "no-cache, must-revalidate, max-age=0"


async def test_the_legacy_action_is_unknown_to_aipkit(emulator) -> None:
    async with browser() as http:
        reply = await http.post(
            emulator.url + AJAX_PATH, data={"action": "wpaicg_chat_shortcode_message"}
        )
    assert (reply.status_code, reply.content) == (400, b"0")
    assert reply.headers["content-type"].startswith("text/html")


async def test_stats_count_each_kind_of_request(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        for n in range(3):
            await session.send(f"prompt {n}")
    stats = emulator.stats
    assert (stats.gets, stats.posts, stats.streams, stats.answers) == (1, 3, 3, 3)
    assert stats.requests == 7
    assert len(stats.post_times) == 3
    assert len(stats.guests) == 1
