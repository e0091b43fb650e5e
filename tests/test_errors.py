"""The error hierarchy, every error kind over real HTTP, and no credentials in any message."""

from __future__ import annotations

import traceback
from typing import Any

import pytest
from curl_cffi.requests import AsyncSession
from hypothesis import given
from hypothesis import strategies as st

from batchgpt.emulator import AJAX_PATH
from batchgpt.errors import (
    QUOTE_LIMIT,
    RETRYABLE_KINDS,
    UNREACHABLE_KINDS,
    BadResponseError,
    BatchGptError,
    CaptchaError,
    CloudflareChallengeError,
    FinalError,
    MissingRequirementsError,
    ModelNotSupportedError,
    NonceError,
    NoNonceError,
    ProviderError,
    RateLimitedError,
    RequestTimeoutError,
    RetryableError,
    ServerError,
    SiteChangedError,
    SiteError,
    TransportError,
    quote_body,
)
from batchgpt.providers import ChatGptEsSession
from batchgpt.providers.chatgpt_es.legacy import parse_answer
from batchgpt.redact import redact

# The legacy chat, answering in JSON (streaming off), as these tests were written for it.
pytestmark = pytest.mark.emulator_config(chat="legacy", stream=False)

RETRYABLE = {
    NonceError: "nonce",
    RateLimitedError: "rate_limited",
    CloudflareChallengeError: "cloudflare",
    ServerError: "server_error",
    RequestTimeoutError: "timeout",
    TransportError: "connection",
    BadResponseError: "bad_response",
}
FINAL = {
    CaptchaError: "captcha",
    SiteError: "site_error",
    NoNonceError: "no_nonce",
    SiteChangedError: "site_changed",
}


# the hierarchy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "kind"), RETRYABLE.items())
def test_retryable_errors(cls: type[ProviderError], kind: str) -> None:
    assert issubclass(cls, RetryableError)
    assert issubclass(cls, ProviderError)
    assert issubclass(cls, ValueError)
    assert cls.kind == kind
    assert cls.retryable
    assert cls("boom").retryable


@pytest.mark.parametrize(("cls", "kind"), FINAL.items())
def test_final_errors(cls: type[ProviderError], kind: str) -> None:
    assert issubclass(cls, FinalError)
    assert issubclass(cls, ProviderError)
    assert cls.kind == kind
    assert not cls.retryable


def test_kinds_are_unique() -> None:
    kinds = [*RETRYABLE.values(), *FINAL.values(), "model_not_supported", "missing_requirements"]
    assert len(kinds) == len(set(kinds))


def test_retryable_kinds() -> None:
    assert set(RETRYABLE.values()) == RETRYABLE_KINDS


def test_unreachable_kinds_are_retryable_transport_failures() -> None:
    assert {"server_error", "timeout", "connection", "cloudflare"} == UNREACHABLE_KINDS
    assert UNREACHABLE_KINDS <= RETRYABLE_KINDS


def test_model_and_requirement_errors() -> None:
    assert issubclass(ModelNotSupportedError, ValueError)
    assert not issubclass(ModelNotSupportedError, ProviderError)
    assert ModelNotSupportedError.kind == "model_not_supported"
    assert not ModelNotSupportedError.retryable
    assert issubclass(MissingRequirementsError, BatchGptError)
    assert not MissingRequirementsError.retryable


def test_message_is_one_redacted_line_and_keeps_the_status() -> None:
    error = ServerError("GET  http://bob:hunter2@proxy:8080\n failed\t badly", http_status=502)
    assert str(error) == error.message == "GET http://***@proxy:8080 failed badly"
    assert error.http_status == 502


def test_rate_limited_error_carries_retry_after() -> None:
    error = RateLimitedError("slow down", retry_after=3.5)
    assert (error.retry_after, error.http_status) == (3.5, 429)
    assert RateLimitedError("slow down").retry_after is None


def test_quote_body() -> None:
    assert quote_body(b"  a\n\tb  ") == "a b"
    assert quote_body("x" * 1000) == "x" * QUOTE_LIMIT + "…"
    assert quote_body(b"\xff\xfeok") == "\ufffd\ufffdok"
    assert quote_body("abcdef", limit=3) == "abc…"


# redact -------------------------------------------------------------------------------------------

userinfo_chars = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%",
    min_size=1,
    max_size=60,
)


@given(
    scheme=st.sampled_from(["http", "https", "socks5", "socks5h", "socks4a"]),
    user=userinfo_chars,
    password=userinfo_chars,
    before=st.text(alphabet=st.characters(blacklist_characters=":/@"), max_size=30),
)
def test_redact_removes_userinfo(scheme: str, user: str, password: str, before: str) -> None:
    url = f"{scheme}://{user}:{password}@127.0.0.1:3128/path"
    text = f"{before} proxy {url} failed"
    assert redact(text) == f"{before} proxy {scheme}://***@127.0.0.1:3128/path failed"


def test_redact_every_url_and_nothing_else() -> None:
    text = "a http://u:p@h1 b https://h2/x@y c socks5://v:q@h3:1080 mail me@example.com"
    assert (
        redact(text)
        == "a http://***@h1 b https://h2/x@y c socks5://***@h3:1080 mail me@example.com"
    )


def test_redact_hostile_input_returns() -> None:
    assert redact("http://" + "a" * 1_000_000) == "http://" + "a" * 1_000_000
    assert redact("a://" * 250_000).startswith("a://")


# every kind over real HTTP ------------------------------------------------------------------------

CASES: list[tuple[str, dict[str, Any], str, type[ProviderError]]] = [
    ("captcha", {}, "[captcha] Hola", CaptchaError),
    ("site-error", {}, "[site-error] Hola", SiteError),
    ("empty-message", {}, "   ", SiteError),
    ("server-error", {"error_rate": 1.0}, "Hola", ServerError),
    ("truncated", {"truncate_rate": 1.0}, "Hola", BadResponseError),
    ("challenge", {"challenge_rate": 1.0}, "Hola", CloudflareChallengeError),
    ("down", {"down": True}, "Hola", ServerError),
    ("no-nonce", {"nonce_markup": "none"}, "Hola", NoNonceError),
    ("stale-nonce", {"stale_page_nonce": True}, "Hola", NonceError),
]


@pytest.mark.parametrize(
    ("settings", "prompt", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_each_kind_over_real_http(
    emulator, settings: dict[str, Any], prompt: str, expected: type[ProviderError]
) -> None:
    emulator.configure(**settings)
    async with emulator.session(timeout=0.5) as session:
        with pytest.raises(expected) as info:
            await session.send(prompt)
    error = info.value
    assert type(error) is expected
    assert error.kind == expected.kind
    assert error.retryable == issubclass(expected, RetryableError)
    assert "\n" not in str(error)
    assert len(str(error)) < QUOTE_LIMIT + 200


async def test_site_error_carries_the_sites_message(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        with pytest.raises(SiteError) as info:
            await session.send("[site-error] Hola")
    assert str(info.value) == "Your message contains prohibited words."
    assert info.value.http_status == 200


async def test_captcha_carries_the_gate_text(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        with pytest.raises(CaptchaError, match="Kästchen anklicken"):
            await session.send("[captcha] Hola")


async def test_server_error_status(emulator) -> None:
    emulator.configure(error_rate=1.0)
    async with emulator.session(timeout=5) as session:
        for _ in range(4):
            with pytest.raises(ServerError) as info:
                await session.send("Hola")
            assert info.value.http_status in (500, 502, 503, 520)


async def test_down_site_fails_on_the_page(emulator) -> None:
    emulator.configure(down=True)
    async with emulator.session(timeout=5) as session:
        with pytest.raises(ServerError) as info:
            await session.send("Hola")
    assert info.value.http_status == 503
    assert emulator.stats.posts == 0


async def test_hang_beyond_the_timeout(emulator) -> None:
    emulator.configure(hang_rate=1.0, hang_seconds=2.0)
    async with emulator.session(timeout=0.5) as session:
        with pytest.raises(RequestTimeoutError, match=r"timed out after 0\.5 s") as info:
            await session.send("Hola")
    assert info.value.retryable
    assert info.value.kind == "timeout"


@pytest.mark.parametrize(("retry_after", "low", "high"), [("1", 1.0, 1.0), ("date", 0.0, 2.0)])
async def test_rate_limited_with_retry_after(
    emulator, retry_after: str, low: float, high: float
) -> None:
    emulator.configure(rate_limit=1, retry_after=retry_after)
    async with emulator.session(timeout=5) as session:
        await session.send("first")
        with pytest.raises(RateLimitedError) as info:
            await session.send("second")
    assert info.value.http_status == 429
    assert info.value.retry_after is not None
    assert low <= info.value.retry_after <= high
    assert emulator.stats.status[429] == 1


async def test_challenge_on_a_post(emulator) -> None:
    async with emulator.session(timeout=5) as session:
        await session.send("first")
        emulator.configure(challenge_rate=1.0)
        with pytest.raises(CloudflareChallengeError) as info:
            await session.send("second")
    assert info.value.http_status == 403


async def test_connection_refused(closed_port: int) -> None:
    async with ChatGptEsSession(f"http://127.0.0.1:{closed_port}", timeout=2) as session:
        with pytest.raises(TransportError) as info:
            await session.send("Hola")
    assert info.value.retryable
    assert info.value.kind == "connection"
    assert str(closed_port) in str(info.value)


async def test_unknown_action_means_the_site_changed(emulator) -> None:
    async with AsyncSession(impersonate="chrome") as http:
        page = await http.get(emulator.url)
        assert page.status_code == 200
        response = await http.post(
            emulator.url + AJAX_PATH, data={"action": "wpaicg_no_such_action", "message": "Hola"}
        )
    assert (response.status_code, response.content) == (400, b"0")
    with pytest.raises(SiteChangedError) as info:
        parse_answer(response.status_code, dict(response.headers), response.content)
    assert info.value.http_status == 400
    assert not info.value.retryable


# credentials --------------------------------------------------------------------------------------


async def test_dead_proxy_error_never_shows_its_password(emulator, closed_port: int) -> None:
    proxy = f"http://user:secret@127.0.0.1:{closed_port}"
    async with ChatGptEsSession(emulator.url, proxy=proxy, timeout=2) as session:
        with pytest.raises(TransportError) as info:
            await session.send("Hola")
    error = info.value
    assert "secret" not in str(error)
    assert "secret" not in repr(error)
    assert "secret" not in "".join(traceback.format_exception(error))
    assert emulator.stats.gets == 0


async def test_dead_proxy_through_the_provider(emulator, closed_port: int) -> None:
    proxy = f"http://user:secret@127.0.0.1:{closed_port}"
    with pytest.raises(TransportError) as info:
        await emulator.provider.create_async(
            "gpt-4o", [{"role": "user", "content": "Hola"}], proxy=proxy, timeout=2
        )
    assert "secret" not in str(info.value)
