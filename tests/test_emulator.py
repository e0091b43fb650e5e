"""The emulator speaks the wire protocol of PROTOCOL.md: checked with raw curl_cffi requests."""

from __future__ import annotations

import asyncio
import email.utils
import json
import signal
import socket

import pytest
from curl_cffi.requests import AsyncSession
from support import CLI, finish, start

from batchgpt.emulator import (
    AJAX_PATH,
    CAPTCHA_TEXT,
    COOKIE,
    NONCE_MARKUPS,
    EmulatorConfig,
    expected_answer,
    max_in_window,
    running_emulator,
)
from batchgpt.providers.chatgpt_es.answer import is_cloudflare_challenge
from batchgpt.providers.chatgpt_es.page import find_legacy_chat

# The legacy chat, answering in JSON (streaming off), as these tests were written for it.
pytestmark = pytest.mark.emulator_config(chat="legacy", stream=False)

EXPECTED_SOURCE = {
    "data-nonce": "data-nonce",
    "wpaicgParams": "wpaicgParams",
    "hidden-input": "fallback",
    "script-var": "fallback",
}


def browser() -> AsyncSession:
    """A curl_cffi session that looks like Chrome, as ours does."""
    return AsyncSession(impersonate="chrome")


async def scrape(http: AsyncSession, url: str) -> str:
    response = await http.get(url)
    assert response.status_code == 200
    page = find_legacy_chat(response.content)
    assert page is not None
    return page.nonce


def chat_form(nonce: str, message: str = "Hola") -> dict[str, str]:
    return {"action": "wpaicg_chat_shortcode_message", "_wpnonce": nonce, "message": message}


# the page -----------------------------------------------------------------------------------------


def test_markups_cover_the_protocol() -> None:
    assert set(NONCE_MARKUPS) == {*EXPECTED_SOURCE, "none"}


@pytest.mark.parametrize("markup", list(EXPECTED_SOURCE))
async def test_page_carries_the_nonce_in_each_markup(emulator, markup: str) -> None:
    emulator.configure(nonce_markup=markup)
    async with browser() as http:
        response = await http.get(emulator.url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = find_legacy_chat(response.content)
    assert page is not None
    assert page.source == EXPECTED_SOURCE[markup]
    assert "0000000000" not in page.nonce


async def test_page_without_a_nonce(emulator) -> None:
    emulator.configure(nonce_markup="none")
    async with browser() as http:
        response = await http.get(emulator.url)
    assert response.status_code == 200
    assert find_legacy_chat(response.content) is None


async def test_page_sets_the_cloudflare_cookie_once(emulator) -> None:
    async with browser() as http:
        await http.get(emulator.url)
        cookie = http.cookies.get(COOKIE)
        await http.get(emulator.url + "/chat")
        assert http.cookies.get(COOKIE) == cookie
    assert cookie
    assert emulator.stats.gets == 2


async def test_any_path_serves_the_page(emulator) -> None:
    async with browser() as http:
        response = await http.get(emulator.url + "/chat/")
    assert find_legacy_chat(response.content) is not None


# browsers and challenges --------------------------------------------------------------------------


async def test_plain_client_gets_the_challenge_and_ours_passes(emulator) -> None:
    async with AsyncSession() as plain:
        response = await plain.get(emulator.url)
    assert response.status_code == 403
    assert response.headers["cf-mitigated"] == "challenge"
    assert b"<title>Just a moment...</title>" in response.content
    assert is_cloudflare_challenge(response.status_code, dict(response.headers), response.content)
    assert emulator.stats.challenges == 1

    async with emulator.session(timeout=5) as session:
        assert await session.send("Hola") == expected_answer("Hola")
    assert emulator.stats.challenges == 1


async def test_plain_client_passes_when_browsers_are_not_required(emulator) -> None:
    emulator.configure(require_browser=False)
    async with AsyncSession() as plain:
        response = await plain.get(emulator.url)
    assert response.status_code == 200
    assert emulator.stats.challenges == 0


async def test_a_challenged_cookie_stays_challenged(emulator) -> None:
    async with browser() as http:
        nonce = await scrape(http, emulator.url)
        emulator.configure(challenge_rate=1.0)
        first = await http.post(emulator.url + AJAX_PATH, data=chat_form(nonce))
        emulator.configure(challenge_rate=0.0)
        again = await http.post(emulator.url + AJAX_PATH, data=chat_form(nonce))
        page = await http.get(emulator.url)
    assert first.status_code == again.status_code == page.status_code == 403
    async with browser() as fresh:
        assert (await fresh.get(emulator.url)).status_code == 200


# nonces -------------------------------------------------------------------------------------------


async def test_a_scraped_nonce_is_accepted(emulator) -> None:
    async with browser() as http:
        nonce = await scrape(http, emulator.url)
        response = await http.post(emulator.url + AJAX_PATH, data=chat_form(nonce))
    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "msg": "Something went wrong",
        "data": expected_answer("Hola"),
        "log": 1,
    }


@pytest.mark.parametrize(
    ("failure", "status", "body"),
    [
        ("-1", 403, b"-1"),
        (
            "expired",
            403,
            b'The link you followed has expired.</p><p><a href="">Please try again.</a>',
        ),
        ("json", 200, b'{"status": "error", "msg": "Nonce verification failed"}'),
    ],
)
async def test_nonce_failure_styles(emulator, failure: str, status: int, body: bytes) -> None:
    emulator.configure(nonce_failure=failure)
    async with browser() as http:
        await scrape(http, emulator.url)
        response = await http.post(emulator.url + AJAX_PATH, data=chat_form("0123456789"))
    assert (response.status_code, response.content) == (status, body)
    assert emulator.stats.nonce_failures == 1


async def test_the_nonce_is_the_same_for_every_visitor(emulator) -> None:
    """WordPress's nonce for a visitor who is not logged in depends on the tick, not on cookies
    (PROTOCOL.md §A1, §B1): another visitor's nonce is accepted."""
    async with browser() as first:
        nonce = await scrape(first, emulator.url)
    async with browser() as second:
        assert await scrape(second, emulator.url) == nonce
        response = await second.post(emulator.url + AJAX_PATH, data=chat_form(nonce))
    assert response.status_code == 200
    assert emulator.stats.nonce_failures == 0


async def test_rotation_invalidates_nonces(emulator) -> None:
    async with browser() as http:
        old = await scrape(http, emulator.url)
        emulator.emu.rotate_nonces()
        rejected = await http.post(emulator.url + AJAX_PATH, data=chat_form(old))
        new = await scrape(http, emulator.url)
        accepted = await http.post(emulator.url + AJAX_PATH, data=chat_form(new))
    assert old != new
    assert (rejected.status_code, accepted.status_code) == (403, 200)


async def test_nonces_expire_with_their_tick(emulator) -> None:
    async with browser() as http:
        nonce = await scrape(http, emulator.url)
        emulator.configure(nonce_life=3600.0)
        response = await http.post(emulator.url + AJAX_PATH, data=chat_form(nonce))
    assert response.status_code == 403


async def test_stale_page_nonce_is_never_accepted(emulator) -> None:
    emulator.configure(stale_page_nonce=True)
    async with browser() as http:
        for _ in range(2):
            nonce = await scrape(http, emulator.url)
            response = await http.post(emulator.url + AJAX_PATH, data=chat_form(nonce))
            assert response.status_code == 403
    emulator.configure(stale_page_nonce=False)
    async with emulator.session(timeout=5) as session:
        assert await session.send("Hola") == expected_answer("Hola")


# answers and faults -------------------------------------------------------------------------------


def test_expected_answer_is_deterministic() -> None:
    assert expected_answer("Hola") == expected_answer("Hola")
    assert expected_answer("Hola") != expected_answer("Hola!")
    assert expected_answer("line one\nline two").endswith("«line one line two»")


async def test_unknown_action(emulator) -> None:
    async with browser() as http:
        response = await http.post(emulator.url + AJAX_PATH, data={"action": "other"})
    assert (response.status_code, response.content) == (400, b"0")


async def test_stream_wire_format(emulator) -> None:
    emulator.configure(stream=True)
    async with browser() as http:
        nonce = await scrape(http, emulator.url)
        response = await http.post(emulator.url + AJAX_PATH, data=chat_form(nonce))
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.content.split(b"\n") if line]
    assert lines[-1] == b"data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}  # relayed as is
    first, *middle, last = (chunk["choices"][0] for chunk in chunks)
    assert first["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert (last["delta"], last["finish_reason"]) == ({}, "stop")
    deltas = [choice["delta"]["content"] for choice in middle]
    assert len(deltas) > 1
    assert "".join(deltas) == expected_answer("Hola")


async def test_markers_and_empty_message(emulator) -> None:
    emulator.configure(captcha_marker="XCAPTCHA", site_error_marker="XERROR")
    async with browser() as http:
        nonce = await scrape(http, emulator.url)

        async def ask(message: str) -> dict[str, object]:
            response = await http.post(emulator.url + AJAX_PATH, data=chat_form(nonce, message))
            return response.json()

        assert (await ask("XCAPTCHA hi"))["data"] == CAPTCHA_TEXT
        assert (await ask("XERROR hi"))["status"] == "error"
        assert (await ask("  "))["msg"] == "Please enter a message."
        assert (await ask("[captcha] hi"))["data"] == expected_answer("[captcha] hi")


async def test_faults(emulator) -> None:
    async with browser() as http:
        nonce = await scrape(http, emulator.url)
        post = emulator.url + AJAX_PATH

        emulator.configure(truncate_rate=1.0)
        truncated = await http.post(post, data=chat_form(nonce))
        emulator.configure(truncate_rate=0.0, error_rate=1.0)
        failed = await http.post(post, data=chat_form(nonce))
        emulator.configure(error_rate=0.0, down=True)
        down = (await http.get(emulator.url), await http.post(post, data=chat_form(nonce)))
    full = json.dumps({"status": "success", "data": expected_answer("Hola")})
    assert truncated.status_code == 200
    assert truncated.text == full[: len(full) // 2]
    assert failed.status_code in (500, 502, 503, 520)
    assert [r.status_code for r in down] == [503, 503]


@pytest.mark.parametrize("retry_after", ["1", "date"])
async def test_rate_limit(emulator, retry_after: str) -> None:
    emulator.configure(rate_limit=2, retry_after=retry_after)
    async with browser() as http:
        nonce = await scrape(http, emulator.url)
        responses = [
            await http.post(emulator.url + AJAX_PATH, data=chat_form(nonce)) for _ in range(3)
        ]
    assert [r.status_code for r in responses] == [200, 200, 429]
    value = responses[2].headers["retry-after"]
    if retry_after == "1":
        assert value == "1"
    else:
        assert email.utils.parsedate_to_datetime(value) is not None


def test_faults_follow_the_seed() -> None:
    async def statuses(url: str) -> list[int]:
        async with browser() as http:
            nonce = await scrape(http, url)
            return [
                (await http.post(url + AJAX_PATH, data=chat_form(nonce))).status_code
                for _ in range(12)
            ]

    runs = []
    for _ in range(2):
        config = EmulatorConfig(chat="legacy", stream=False, error_rate=0.5, seed=7)
        with running_emulator(config) as (_emu, url):
            runs.append(asyncio.run(statuses(url)))
    assert runs[0] == runs[1]
    assert 200 in runs[0]
    assert set(runs[0]) - {200}


# counters, control and lifecycle ------------------------------------------------------------------


async def test_stats_count_the_traffic(emulator) -> None:
    emulator.configure(latency=0.2)
    async with emulator.session(timeout=5, max_clients=10) as session:
        await asyncio.gather(*(session.send(f"prompt {n}") for n in range(10)))
    stats = emulator.stats
    assert (stats.gets, stats.posts, stats.answers) == (1, 10, 10)
    assert stats.status[200] == 11
    assert len(stats.post_times) == 10
    assert stats.max_in_flight > 1
    assert stats.in_flight == 0
    assert len(stats.forms) == len(stats.headers) == 10
    assert stats.answered["prompt 3"] == 1


def test_forms_are_kept_only_on_request() -> None:
    async def ask(url: str) -> None:
        async with browser() as http:
            nonce = await scrape(http, url)
            await http.post(url + AJAX_PATH, data=chat_form(nonce))

    with running_emulator(EmulatorConfig(chat="legacy")) as (emu, url):
        asyncio.run(ask(url))
    assert emu.stats.answers == 1
    assert emu.stats.forms == []
    assert emu.stats.headers == []


async def test_control_endpoints(emulator) -> None:
    control = emulator.url + "/__emulator__/"
    async with AsyncSession() as http:
        changed = await http.post(control + "config", json={"stream": "true", "latency": "0.25"})
        assert changed.status_code == 200
        assert changed.json()["stream"] is True
        assert emulator.config.latency == 0.25

        rejected = await http.post(control + "config", json={"no_such_setting": 1})
        assert rejected.status_code == 400

        async with browser() as chrome:
            nonce = await scrape(chrome, emulator.url)
            assert (await http.post(control + "rotate")).json() == {"rotated": True}
            response = await chrome.post(emulator.url + AJAX_PATH, data=chat_form(nonce))
            assert response.status_code == 403

        await http.post(control + "config", json={"reset_stats": True, "stream": False})
        await http.get(emulator.url)
        stats = (await http.get(control + "stats")).json()
        assert stats["gets"] == 1
        assert stats["challenges"] == 1
        assert stats["status"] == {"403": 1}

        await http.post(control + "config", json={"reset_stats": True})
        assert (await http.get(control + "stats")).json()["gets"] == 0


def test_config_update_converts_types() -> None:
    config = EmulatorConfig()
    config.update({"stream": "yes", "rate_limit": "3", "retry_after": "date", "down": 0})
    assert (config.stream, config.rate_limit, config.retry_after, config.down) == (
        True,
        3.0,
        "date",
        False,
    )
    with pytest.raises(KeyError):
        config.update({"nope": 1})


def test_max_in_window() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_in_window([0.0, 1.0, 2.0]) == 1
    assert max_in_window([3.0, 0.1, 0.2], window=0.5) == 2


def test_the_port_is_closed_after_the_context() -> None:
    with running_emulator() as (_emu, url):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_the_emulator_command_refuses_a_busy_port_and_an_unknown_setting(emulator) -> None:
    import subprocess
    import sys

    port = emulator.url.rsplit(":", 1)[1]
    busy = subprocess.run(
        [sys.executable, "-m", "batchgpt", "emulator", "--port", port],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert busy.returncode == 2
    assert f"cannot serve on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "batchgpt", "emulator", "--port", "0", "--set", "bogus=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unknown.returncode == 2
    assert "unknown emulator setting 'bogus'" in unknown.stderr


@pytest.mark.parametrize("api", ["chatgpt-es", "openai"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_emulator_command_ends_quietly_on_a_signal(api: str, sig: signal.Signals) -> None:
    """A server's normal end: exit 0 and nothing on stderr, for either API."""
    process = start([*CLI, "emulator", "--api", api, "--port", "0"])
    assert process.stdout is not None
    assert "http://127.0.0.1:" in process.stdout.readline()
    process.send_signal(sig)
    code, _out, err = finish(process, timeout=30)
    assert (code, err) == (0, "")


async def test_a_hung_request_is_answered_whole_after_the_hang(emulator) -> None:
    """Each fault is drawn once: a request in the hang band is not also cut (it used to be)."""
    emulator.configure(hang_rate=1.0, hang_seconds=0.2, truncate_rate=0.5)
    async with browser() as http:
        nonce = await scrape(http, emulator.url)
        responses = [
            await http.post(emulator.url + AJAX_PATH, data=chat_form(nonce)) for _ in range(5)
        ]
    assert [r.json()["data"] for r in responses] == [expected_answer("Hola")] * 5
