"""Answer classification (PROTOCOL.md §3) as pure functions: every row of the table, any input."""

from __future__ import annotations

import email.utils
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgpt.errors import (
    QUOTE_LIMIT,
    BadResponseError,
    BlockedError,
    CaptchaError,
    CloudflareChallengeError,
    NonceError,
    ProviderError,
    QuotaError,
    RateLimitedError,
    ServerError,
    SiteChangedError,
    SiteError,
)
from batchgpt.providers.chatgpt_es.answer import (
    CAPTCHA_TEXT,
    check_status,
    is_cloudflare_challenge,
    parse_retry_after,
)
from batchgpt.providers.chatgpt_es.legacy import SseDecoder, _stream_text, parse_answer

JSON = {"content-type": "application/json; charset=UTF-8"}
SSE = {"content-type": "text/event-stream"}
HTML = {"content-type": "text/html; charset=UTF-8"}


def json_body(obj: object) -> bytes:
    return orjson.dumps(obj)


def sse_body(*pieces: str, done: bool = True) -> bytes:
    lines = [
        b"data: " + orjson.dumps({"choices": [{"delta": {"content": piece}}]}) + b"\n\n"
        for piece in pieces
    ]
    return b"".join(lines) + (b"data: [DONE]\n\n" if done else b"")


# answers ------------------------------------------------------------------------------------------


def test_json_answer_with_leftover_msg_and_log() -> None:
    body = json_body({"status": "success", "msg": "Something went wrong", "data": "Hola", "log": 1})
    assert parse_answer(200, JSON, body) == "Hola"


def test_json_answer_without_status() -> None:
    assert parse_answer(200, JSON, json_body({"data": "Hola"})) == "Hola"


def test_empty_answer_is_an_answer() -> None:
    assert parse_answer(200, JSON, json_body({"status": "success", "data": ""})) == ""


def test_event_stream_answer() -> None:
    assert parse_answer(200, SSE, sse_body("Ho", "la", " mundo")) == "Hola mundo"


def test_event_stream_recognised_without_content_type() -> None:
    assert parse_answer(200, {}, sse_body("Ho", "la")) == "Hola"


def test_event_stream_with_crlf_and_comments() -> None:
    body = b": keep-alive\r\n\r\nevent: message\r\n" + sse_body("a", "b").replace(b"\n", b"\r\n")
    assert parse_answer(200, SSE, body) == "ab"


# site refusals ------------------------------------------------------------------------------------


def test_captcha_gate() -> None:
    body = json_body({"status": "success", "msg": "", "data": f"{CAPTCHA_TEXT} Bitte bestätige."})
    with pytest.raises(CaptchaError) as info:
        parse_answer(200, JSON, body)
    assert info.value.kind == "captcha"
    assert not info.value.retryable
    assert CAPTCHA_TEXT in str(info.value)


def test_captcha_gate_in_a_stream() -> None:
    with pytest.raises(CaptchaError):
        parse_answer(200, SSE, sse_body("Du musst das ", "Kästchen anklicken!"))


def test_json_nonce_failure() -> None:
    body = json_body({"status": "error", "msg": "Nonce verification failed"})
    with pytest.raises(NonceError) as info:
        parse_answer(200, JSON, body)
    assert info.value.retryable
    assert info.value.kind == "nonce"


@pytest.mark.parametrize(
    "body",
    [b"-1", b" -1\n", b"The link you followed has expired. Please try again."],
)
def test_403_nonce_failures(body: bytes) -> None:
    with pytest.raises(NonceError) as info:
        parse_answer(403, HTML, body)
    assert info.value.http_status == 403


@pytest.mark.parametrize(
    "message",
    ["Please enter a message.", "Your message contains prohibited words.", "Your IP is banned."],
)
def test_plugin_refusal_keeps_the_site_message(message: str) -> None:
    with pytest.raises(SiteError) as info:
        parse_answer(200, JSON, json_body({"status": "error", "msg": message}))
    assert str(info.value) == message
    assert info.value.kind == "site_error"
    assert not info.value.retryable


def test_refusal_without_a_message() -> None:
    with pytest.raises(SiteError):
        parse_answer(200, JSON, json_body({"status": "error"}))


#: PROTOCOL.md §C5: a limit stops the run, a ban benches the proxy, a flagged message fails alone.
LIMIT_FLAGS = {
    "tokenLimitReached": QuotaError,
    "ipBanned": BlockedError,
    "messageFlagged": SiteError,
}


@pytest.mark.parametrize(("flag", "error"), LIMIT_FLAGS.items())
def test_limits_and_bans(flag: str, error: type[ProviderError]) -> None:
    body = json_body({"msg": "You have reached your token limit.", flag: True})
    with pytest.raises(error, match="token limit"):
        parse_answer(200, JSON, body)


@pytest.mark.parametrize(("flag", "error"), LIMIT_FLAGS.items())
def test_limits_and_bans_in_a_stream(flag: str, error: type[ProviderError]) -> None:
    body = b'data: {"msg":"You are banned.","' + flag.encode() + b'":true}\n\ndata: [DONE]\n\n'
    with pytest.raises(error, match="You are banned"):
        parse_answer(200, SSE, body)


def test_the_token_limit_as_the_streaming_plugin_sends_it() -> None:
    """1.9.16 and 2.2 in their default streaming mode: one event, no [DONE] (real capture)."""
    body = b'data: {"msg":"You have reached your token limit.","tokenLimitReached":true}\n\n'
    with pytest.raises(QuotaError, match="token limit"):
        parse_answer(200, {"content-type": "text/event-stream;charset=UTF-8"}, body)


def test_json_with_msg_but_no_data_is_the_sites_message() -> None:
    with pytest.raises(SiteError, match="Maintenance"):
        parse_answer(200, JSON, json_body({"msg": "Maintenance"}))


# broken answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>oops</html>",
        b'{"status":"success","data":"Hola',
        json_body({"status": "success"}),
        json_body({"status": "success", "data": 5}),
        json_body(["data", "Hola"]),
        json_body("Hola"),
        b"\xff\xfe",
    ],
)
def test_broken_answers_are_retryable(body: bytes) -> None:
    with pytest.raises(BadResponseError) as info:
        parse_answer(200, JSON, body)
    assert info.value.retryable
    assert info.value.kind == "bad_response"


@pytest.mark.parametrize(
    "body",
    [sse_body("Ho", "la", done=False), b"data: {not json\n\n", b"data: [1, 2]\n\ndata: [DONE]\n\n"],
)
def test_broken_streams_are_retryable(body: bytes) -> None:
    with pytest.raises(BadResponseError):
        parse_answer(200, SSE, body)


# HTTP statuses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "marker",
    [
        b"<title>Just a moment...</title>",
        b"cf-please-wait",
        b'<div id="cf-spinner-please-wait">',
        b"<title>Attention Required! | Cloudflare</title>",
    ],
)
@pytest.mark.parametrize("status", [403, 503])
def test_cloudflare_markers(status: int, marker: bytes) -> None:
    body = b"<!DOCTYPE html><html><head>" + marker + b"</head></html>"
    assert is_cloudflare_challenge(status, HTML, body)
    with pytest.raises(CloudflareChallengeError) as info:
        check_status(status, HTML, body)
    assert info.value.retryable
    assert info.value.kind == "cloudflare"
    assert info.value.http_status == status


@pytest.mark.parametrize("status", [200, 403, 429, 503])
def test_cf_mitigated_header_is_a_challenge_whatever_the_status(status: int) -> None:
    with pytest.raises(CloudflareChallengeError):
        check_status(status, {"cf-mitigated": "challenge"}, b"")


def test_a_page_that_merely_mentions_cloudflare_is_not_a_challenge() -> None:
    body = b"<p>We wrote about cf-please-wait and Just a moment...</p>"
    assert not is_cloudflare_challenge(200, HTML, body)
    check_status(200, HTML, body)


def test_403_nonce_page_is_not_a_challenge() -> None:
    assert not is_cloudflare_challenge(403, HTML, b"-1")
    assert not is_cloudflare_challenge(403, HTML, b"The link you followed has expired.")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 520, 522])
def test_server_errors(status: int) -> None:
    with pytest.raises(ServerError) as info:
        check_status(status, HTML, b"<h1>Error</h1>")
    assert info.value.http_status == status
    assert info.value.retryable
    assert info.value.kind == "server_error"


def test_rate_limited_with_seconds() -> None:
    with pytest.raises(RateLimitedError) as info:
        check_status(429, {"retry-after": "7"}, b"Too Many Requests")
    assert info.value.retry_after == 7.0
    assert info.value.http_status == 429
    assert info.value.kind == "rate_limited"


def test_rate_limited_without_retry_after() -> None:
    with pytest.raises(RateLimitedError) as info:
        check_status(429, {}, b"")
    assert info.value.retry_after is None


def test_unknown_action() -> None:
    with pytest.raises(SiteChangedError) as info:
        check_status(400, HTML, b"0")
    assert info.value.http_status == 400
    assert info.value.kind == "site_changed"
    assert not info.value.retryable


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 405])
def test_other_statuses_mean_the_site_changed(status: int) -> None:
    with pytest.raises(SiteChangedError):
        check_status(status, HTML, b"<h1>Nope</h1>")


def test_a_huge_body_is_quoted_short() -> None:
    with pytest.raises(ServerError) as info:
        check_status(500, HTML, b"<p>" + b"x" * 1_000_000 + b"</p>\n" * 1000)
    assert len(str(info.value)) < QUOTE_LIMIT + 100
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        json_body({"status": "error", "msg": "x" * 100_000}),
        json_body({"status": "error", "msg": "Nonce verification failed " * 5000}),
        json_body({"msg": "limit " * 20_000, "tokenLimitReached": True}),
        json_body({"msg": "y " * 100_000}),
        json_body({"status": "success", "data": CAPTCHA_TEXT + "z" * 100_000}),
        sse_body(CAPTCHA_TEXT, "z" * 100_000),
        b'data: {"msg":"' + b"q" * 100_000 + b'","ipBanned":true}\n\n',
    ],
)
def test_a_huge_site_message_is_quoted_short(body: bytes) -> None:
    with pytest.raises(ProviderError) as info:
        parse_answer(200, JSON, body)
    assert len(str(info.value)) < QUOTE_LIMIT + 100


# Retry-After --------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**9))
def test_retry_after_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds)) == float(seconds)
    assert parse_retry_after(f" {seconds} ") == float(seconds)


def test_retry_after_http_date() -> None:
    value = email.utils.formatdate(time.time() + 120, usegmt=True)
    seconds = parse_retry_after(value)
    assert seconds is not None
    assert 100 <= seconds <= 121


def test_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3", "Wed, 99 Foo 2015"])
def test_retry_after_unreadable(value: str | None) -> None:
    assert parse_retry_after(value) is None


# SseDecoder ---------------------------------------------------------------------------------------


def test_sse_decoder_lines() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"") == ""
    assert decoder.feed(b": comment") == ""
    assert decoder.feed(b"event: message") == ""
    assert decoder.feed(b'data: {"choices":[{"delta":{"content":"Hi"}}]}') == "Hi"
    assert decoder.feed(b'data:{"choices":[{"delta":{"role":"assistant"}}]}') == ""
    assert decoder.feed(b'data: {"choices":[{"delta":{"content":null}}]}') == ""
    assert decoder.feed(b'data: {"choices":[]}') == ""
    assert decoder.feed(b'data: {"choices":[{"delta":{"content":5}}]}') == ""
    assert not decoder.done
    assert decoder.feed(b"data: [DONE]") == ""
    assert decoder.done
    decoder.finish()


def test_sse_decoder_refuses_a_truncated_stream() -> None:
    decoder = SseDecoder()
    decoder.feed(b'data: {"choices":[{"delta":{"content":"Hi"}}]}')
    with pytest.raises(BadResponseError, match="DONE"):
        decoder.finish()


def test_sse_decoder_nonce_failure_event() -> None:
    with pytest.raises(NonceError):
        SseDecoder().feed(b'data: {"status":"error","msg":"Nonce verification failed"}')


@settings(max_examples=200)
@given(st.lists(st.text(max_size=40), max_size=20))
def test_sse_round_trip(pieces: list[str]) -> None:
    decoder = SseDecoder()
    text = "".join(decoder.feed(line) for line in sse_body(*pieces).splitlines())
    decoder.finish()
    assert text == "".join(pieces)


# any input ----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["success", "error", "other"]) | json_values,
        "msg": st.text(max_size=40) | st.text(min_size=300, max_size=3000) | json_values,
        "data": st.text(max_size=40) | st.just(CAPTCHA_TEXT * 50) | json_values,
        "tokenLimitReached": st.booleans(),
        "choices": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    json_objects.map(orjson.dumps),
    json_objects.map(lambda obj: b"data: " + orjson.dumps(obj) + b"\n\ndata: [DONE]\n\n"),
)


@settings(max_examples=500, deadline=None)
@given(
    status=st.sampled_from([200, 200, 200, 204, 400, 403, 404, 429, 500, 503, 520]),
    headers=st.sampled_from([JSON, SSE, HTML, {}, {"retry-after": "x"}]),
    body=bodies,
)
def test_any_response_is_an_answer_or_a_classified_error(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    try:
        answer = parse_answer(status, headers, body)
    except ProviderError as exc:
        assert exc.kind != "error"
        assert "\n" not in str(exc)
        assert len(str(exc)) < QUOTE_LIMIT + 100
    else:
        assert status == 200
        assert isinstance(answer, str)


def _slow_stream_text(body: bytes) -> str:
    decoder = SseDecoder()
    text = "".join(decoder.feed(line) for line in body.splitlines())
    decoder.finish()
    return text


stream_events = st.one_of(
    st.builds(lambda p: {"choices": [{"delta": {"content": p}}]}, st.text(max_size=20)),
    st.just({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
    st.just({"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
    json_objects,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        stream_events.map(orjson.dumps)
        | st.sampled_from([b"[DONE]", b"[LIMITED]", b"{x", b'"data: x"'])
        # two events on one data line: one broken event to the decoder, not two pieces
        | st.lists(stream_events.map(orjson.dumps), min_size=2, max_size=2).map(b",".join)
    ),
    st.sampled_from([b"\n\n", b"\r\n\r\n", b"\nevent: message\n\n", b" \n\n", b"\n"]),
)
def test_a_whole_stream_reads_as_line_by_line(payloads: list[bytes], separator: bytes) -> None:
    """parse_answer decodes a whole stream in one go; it must say what SseDecoder says."""
    body = b"".join(b"data: " + payload + separator for payload in payloads)
    outcomes = []
    for read in (_stream_text, _slow_stream_text):
        try:
            outcomes.append(("answer", read(body)))
        except ProviderError as error:
            outcomes.append((type(error).__name__, error.message))
    assert outcomes[0] == outcomes[1]
