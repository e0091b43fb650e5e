"""`batchgpt probe` through the real CLI against the emulator: what the site runs, each request,
and the exit code a run would get."""

from __future__ import annotations

import json

import pytest
from support import run_cli

from batchgpt.emulator import expected_answer
from batchgpt.providers.chatgpt_es import ChatGptEs


@pytest.mark.parametrize("plugin", ["2.3", "2.4.71"])
def test_an_aipkit_site(emulator, plugin: str) -> None:
    emulator.configure(chat="aipkit", plugin=plugin, bots="4,7")
    done = run_cli("probe", emulator.url, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["generation"] == "aipkit"
    assert [bot["bot_id"] for bot in report["bots"]] == [4, 7]
    assert report["chat"]["bot_id"] == 4
    assert report["nonce_refresh"] == (
        "aipkit_get_frontend_chat_nonce" if plugin == "2.4.71" else None
    )
    assert [(r["kind"], r["status"]) for r in report["requests"]] == [("page", 200)]
    assert report["would_answer"] is True and report["answer"] is None
    assert (emulator.stats.posts, emulator.stats.streams) == (0, 0)  # a scrape only


def test_ask_sends_one_prompt_as_a_run_would(emulator) -> None:
    emulator.configure(chat="aipkit")
    done = run_cli("probe", emulator.url, "--ask", "¿Qué tal?")
    assert done.returncode == 0, done.stderr
    message = ChatGptEs.format_message([{"role": "user", "content": "¿Qué tal?"}])
    assert f"answer:    {expected_answer(message)}" in done.stdout
    for kind in ("page", "cache", "stream"):
        assert f" {kind} " in done.stdout
    assert "answers:   yes" in done.stdout
    assert emulator.stats.answered[message] == 1


def test_a_legacy_site(emulator) -> None:
    emulator.configure(chat="legacy", nonce_markup="wpaicgParams")
    done = run_cli("probe", emulator.url, "--ask", "Hola", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["generation"] == "legacy"
    assert report["chat"]["source"] == "wpaicgParams"
    assert [(r["kind"], r["method"]) for r in report["requests"]] == [
        ("page", "GET"),
        ("chat", "POST"),
    ]


@pytest.mark.parametrize(
    ("settings", "options", "code", "text"),
    [
        ({"chat": "aipkit"}, ["--bot-id", "9"], 2, "bot 9 is not on"),
        ({"chat": "legacy", "nonce_markup": "none"}, [], 69, "no_nonce"),
        ({"down": True}, [], 69, "server_error"),
        ({"chat": "aipkit", "guest_quota": 1}, ["--ask", "a"], 0, "answers:   yes"),
        ({"chat": "aipkit"}, ["--ask", "[captcha] a"], 1, "captcha"),
        ({"chat": "aipkit", "banned_via": "*"}, ["--ask", "a"], 69, "blocked"),
    ],
    ids=["missing-bot", "no-chat", "down", "answers", "captcha", "banned"],
)
def test_the_exit_code_is_what_a_run_would_get(emulator, settings, options, code, text) -> None:
    emulator.configure(**settings)
    done = run_cli("probe", emulator.url, *options)
    assert done.returncode == code, done.stdout + done.stderr
    assert text in done.stdout
    assert "Traceback" not in done.stderr


def test_an_unreachable_site(closed_port: int) -> None:
    done = run_cli("probe", f"http://127.0.0.1:{closed_port}", "--timeout", "2")
    assert done.returncode == 69
    assert "connection" in done.stdout


def test_a_url_without_scheme_is_a_usage_error_naming_it() -> None:
    result = run_cli("probe", "chatgpt.es")
    assert result.returncode == 2
    assert "Invalid value for URL" in result.stderr
    assert "must be an http:// or https:// URL with a host, not 'chatgpt.es'" in result.stderr
