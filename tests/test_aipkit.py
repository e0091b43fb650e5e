"""The AIPKit chat's protocol as pure functions (PROTOCOL.md §B): the forms and queries sent, the
replies of the cache POST and the nonce refresh, and the answer stream with every error text of
§B4, including the bytes the real plugin sent (2.3 and 2.4.71, captured on a real WordPress)."""

from __future__ import annotations

import re

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
from batchgpt.providers.chatgpt_es.aipkit import (
    CacheMissError,
    StreamDecoder,
    cache_form,
    classify_error,
    parse_stream,
    read_cache_reply,
    read_nonce_reply,
    stream_query,
)
from batchgpt.providers.chatgpt_es.answer import CAPTCHA_TEXT, UnknownActionError
from batchgpt.providers.chatgpt_es.page import AipkitBot

BOT = AipkitBot(4, "916a573425", "https://chatgpt.es/wp-admin/admin-ajax.php", 5, "popup")
SSE = {"content-type": "text/event-stream; charset=utf-8"}
JSON = {"content-type": "application/json; charset=UTF-8"}
PADDING = b":" + b" " * 4096 + b"\n\n"


def event(name: str, data: object, event_id: str = "") -> bytes:
    head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def deltas(*pieces: str) -> bytes:
    return b"".join(b"data: " + orjson.dumps({"delta": p}) + b"\n\n" for p in pieces)


#: What 2.4.71 streamed for "Conformance probe: say hello." (real capture, chunking removed).
REAL_2_4_71 = (
    PADDING
    + event("message_start", {"message_id": "aipkit-msg-6b0eaa7f6ef160.96647334"})
    + event("status", {"type": "response.created", "status": "in_progress", "response_id": "r"})
    + event("status", {"type": "response.in_progress", "status": "in_progress"})
    + deltas("Upstream ", "answer 3e", "1ec2e1d57", "fa13d — o", "k ✓")
    + event("openai_response_id", {"id": "resp_00000111ceecd54fdc0e6176"})
    + event("done", {"finished": True})
)
#: And 2.3: no padding, no status events.
REAL_2_3 = (
    event("message_start", {"message_id": "aipkit-msg-6b0eaa94a4b150.12399677"})
    + deltas("Upstream ", "answer 3e", "1ec2e1d57", "fa13d — o", "k ✓")
    + event("openai_response_id", {"id": "resp_1"})
    + event("done", {"finished": True})
)


# what is sent -------------------------------------------------------------------------------------


def test_the_cache_form_carries_the_message_unchanged() -> None:
    message = "Línea uno\n<b>dos</b> 'tres' \"cuatro\" 🎉"
    form = cache_form(BOT, message)
    assert form["action"] == "aipkit_cache_sse_message"
    assert form["message"] == message
    assert form["_ajax_nonce"] == BOT.nonce
    assert form["bot_id"] == "4"
    assert re.fullmatch(r"aipkit-client-msg-4-\d{13}-[0-9a-z]{5}", form["user_client_message_id"])


def test_every_stream_query_has_a_new_conversation_and_the_same_guest() -> None:
    queries = [stream_query(BOT, f"aipkit_sse_{n}", "guest-1") for n in range(20)]
    assert len({q["conversation_uuid"] for q in queries}) == 20
    assert {q["session_id"] for q in queries} == {"guest-1"}
    first = queries[0]
    assert list(first) == [
        "action",
        "cache_key",
        "bot_id",
        "session_id",
        "conversation_uuid",
        "post_id",
        "_ts",
        "_ajax_nonce",
    ]
    assert first["action"] == "aipkit_frontend_chat_stream"
    assert (first["cache_key"], first["bot_id"], first["post_id"]) == ("aipkit_sse_0", "4", "5")
    assert re.fullmatch(r"[0-9a-f-]{36}", first["conversation_uuid"])


def test_no_post_id_is_sent_for_a_bot_outside_a_post() -> None:
    bot = AipkitBot(4, "916a573425", None, 0, "inline")
    assert "post_id" not in stream_query(bot, "k", "guest")


# the cache POST and the nonce refresh -------------------------------------------------------------


def test_a_cache_key() -> None:
    body = b'{"success":true,"data":{"cache_key":"aipkit_sse_mR0K9hLv3TxHCrQyODUXevOr9pWeGNPK"}}'
    assert read_cache_reply(200, JSON, body) == "aipkit_sse_mR0K9hLv3TxHCrQyODUXevOr9pWeGNPK"


def test_a_cache_nonce_failure_is_a_nonce_error() -> None:
    body = (
        b'{"success":false,"data":{"message":"Your session has expired or the request is '
        b'invalid. Please refresh the page and try again.","code":"nonce_failure_cache_sse"}}'
    )
    with pytest.raises(NonceError, match="session has expired"):
        read_cache_reply(403, JSON, body)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "empty_data_to_cache", SiteError),
        (403, "embed_not_available", SiteError),
        (403, "cors_denied", SiteError),
        (500, "cache_component_missing", ServerError),
    ],
)
def test_other_cache_failures(status: int, code: str, error: type[ProviderError]) -> None:
    body = orjson.dumps({"success": False, "data": {"message": "No.", "code": code}})
    with pytest.raises(error) as info:
        read_cache_reply(status, JSON, body)
    assert code in info.value.message or error is ServerError
    assert info.value.http_status == status


def test_a_cache_reply_that_is_no_wordpress_json_is_classified_by_its_status() -> None:
    with pytest.raises(UnknownActionError):
        read_cache_reply(400, {"content-type": "text/html"}, b"0")
    with pytest.raises(CloudflareChallengeError):
        read_cache_reply(403, {"cf-mitigated": "challenge"}, b"<html>Just a moment...</html>")
    with pytest.raises(BadResponseError):
        read_cache_reply(200, JSON, b'{"success":true,"data":{"cache_key":"aipkit_sse_')
    with pytest.raises(BadResponseError):
        read_cache_reply(200, JSON, b'{"success":true,"data":{}}')


def test_a_fresh_nonce() -> None:
    assert read_nonce_reply(200, JSON, b'{"success":true,"data":{"nonce":"916a573425"}}') == (
        "916a573425"
    )
    with pytest.raises(BadResponseError):
        read_nonce_reply(200, JSON, b'{"success":false}')


# the answer stream --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [REAL_2_4_71, REAL_2_3], ids=["2.4.71", "2.3"])
def test_the_real_streams_read_as_their_answer(body: bytes) -> None:
    assert parse_stream(200, SSE, body) == "Upstream answer 3e1ec2e1d57fa13d — ok ✓"


def test_the_decoder_yields_each_delta_as_its_event_ends() -> None:
    decoder = StreamDecoder()
    seen = [decoder.feed(line) for line in REAL_2_4_71.split(b"\n")]
    assert [piece for piece in seen if piece] == [
        "Upstream ",
        "answer 3e",
        "1ec2e1d57",
        "fa13d — o",
        "k ✓",
    ]
    assert decoder.done


def test_other_named_events_are_ignored_even_a_warning_with_an_error_key() -> None:
    body = (
        event("message_start", {"message_id": "m"})
        + event("citations", {"items": [1]})
        + event("warning", {"error": "Web search unavailable."})
        + deltas("Hola")
        + event("grounding_metadata", {"x": 1})
        + event("done", {"finished": True})
    )
    assert parse_stream(200, SSE, body) == "Hola"


def test_crlf_line_ends_and_data_split_over_lines() -> None:
    body = b'data: {"delta":\r\ndata: "Hi"}\r\n\r\nevent: done\r\ndata: {"finished":true}\r\n\r\n'
    assert parse_stream(200, SSE, body) == "Hi"


def test_a_stream_without_done_is_a_retryable_bad_response() -> None:
    with pytest.raises(BadResponseError, match="done") as info:
        parse_stream(200, SSE, event("message_start", {"message_id": "m"}) + deltas("Ho"))
    assert info.value.retryable


def test_an_ai_failure_ends_without_done_and_is_classified_first() -> None:
    """Real 2.4.71 capture: upstream 429, then EOF, no `done` (finding 1 of the conformance run)."""
    body = (
        PADDING
        + event("message_start", {"message_id": "m"})
        + event(
            "error",
            {
                "error": "API Error: Rate limit reached for gpt-4o-mini in organization org-fake"
                " on requests per min. (Code: rate_limit_exceeded)"
            },
            "err-1796123264",
        )
    )
    with pytest.raises(RateLimitedError, match="Rate limit reached") as info:
        parse_stream(200, SSE, body)
    assert info.value.retryable


def test_a_captcha_answer_is_the_consent_gate() -> None:
    with pytest.raises(CaptchaError):
        parse_stream(200, SSE, deltas(CAPTCHA_TEXT) + event("done", {"finished": True}))


def test_a_reply_that_is_not_a_stream() -> None:
    with pytest.raises(BadResponseError, match="not an event stream"):
        parse_stream(200, JSON, b'{"success":true}')
    with pytest.raises(UnknownActionError):
        parse_stream(400, {"content-type": "text/html"}, b"0")


ERRORS = [
    ("Security check failed. Please refresh the page and try again.", {}, NonceError),
    ("Security check failed (nonce).", {}, NonceError),
    ("Message not found in cache.", {}, CacheMissError),
    ("Message cache key is missing.", {}, CacheMissError),
    ("Conversation ID is missing.", {}, SiteChangedError),
    ("Session ID is missing for guest.", {}, SiteChangedError),
    ("Invalid chatbot specified.", {}, SiteChangedError),
    ("Sorry, your message could not be sent as it contains prohibited words.", {}, SiteError),
    ("Access from your IP address has been blocked.", {}, BlockedError),
    (
        "You have reached your quota for this period.",
        {"quota_notice": {"type": "quota_notice", "message": "…", "actions": []}},
        QuotaError,
    ),
    ("You have reached your token limit for this period.", {}, QuotaError),
    ("API Error: Too many requests (Code: 429)", {}, RateLimitedError),
    ("API Error: Rate limit reached (Code: rate_limit_exceeded)", {}, RateLimitedError),
    ("API Error: Internal error (Code: 500)", {}, ServerError),
    ("API Error: Oops (Code: server_error)", {}, ServerError),
    ("API Error: The server had an error while processing your request.", {}, ServerError),
    ("API Error: You exceeded your current quota (Code: insufficient_quota)", {}, QuotaError),
    ("API Error: Invalid model (Code: model_not_found)", {}, SiteError),
    ("This domain is not permitted to access the chatbot.", {}, SiteError),
    ("Something else entirely.", {}, SiteError),
]


@pytest.mark.parametrize(("text", "data", "error"), ERRORS, ids=[e[0][:40] for e in ERRORS])
def test_every_error_text_is_classified(
    text: str, data: dict[str, object], error: type[ProviderError]
) -> None:
    classified = classify_error(text, data)
    assert type(classified) is error
    assert text[:60] in classified.message  # the site's own words are kept


@pytest.mark.parametrize(
    ("text", "data", "error"), ERRORS[:12], ids=[e[0][:40] for e in ERRORS[:12]]
)
def test_error_events_raise_their_error_from_the_stream(
    text: str, data: dict[str, object], error: type[ProviderError]
) -> None:
    body = PADDING + event("error", {"error": text, **data}, "err-1") + event("done", {})
    with pytest.raises(error):
        parse_stream(200, SSE, body)


def test_quota_and_ai_errors_are_what_halts_and_what_retries() -> None:
    assert classify_error("You have reached your quota for this period.", {}).halts_after == 1
    assert classify_error("Access from your IP address has been blocked.", {}).kind == "blocked"
    assert not classify_error("Sorry, … prohibited words.", {}).retryable
    assert classify_error("API Error: x (Code: 503)", {}).retryable


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400)
    | st.lists(st.text(max_size=30), max_size=8).map(
        lambda pieces: deltas(*pieces) + event("done", {"finished": True})
    )
)
def test_any_stream_is_an_answer_or_a_classified_one_line_error(body: bytes) -> None:
    try:
        answer = parse_stream(200, SSE, body)
    except ProviderError as exc:
        assert exc.kind != "error"
        assert "\n" not in str(exc)
        assert len(str(exc)) < QUOTE_LIMIT + 100
    else:
        assert isinstance(answer, str)


def _line_by_line(body: bytes) -> str:
    decoder = StreamDecoder()
    for line in body.split(b"\n"):
        decoder.feed(line)
    return decoder.finish()


aipkit_events = st.one_of(
    st.text(max_size=12).map(lambda piece: deltas(piece)),
    st.just(event("message_start", {"message_id": "m"})),
    st.just(event("status", {"type": "response.created"})),
    st.just(event("done", {"finished": True})),
    st.just(event("warning", {"error": "not really"})),
    st.sampled_from([e[0] for e in ERRORS]).map(lambda text: event("error", {"error": text}, "e")),
    st.just(PADDING),
    st.just(b"data: {broken\n\n"),
    st.just(b'data: {"delta":\ndata: "split"}\n\n'),
    st.just(b'data: {"delta":"two"},{"delta":"events"}\n\n'),  # one broken event, not two
    st.just(b'event: done\r\ndata: {"finished":true}\r\n\r\n'),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(aipkit_events, max_size=10))
def test_a_whole_stream_reads_as_line_by_line(blocks: list[bytes]) -> None:
    """parse_stream decodes a plain stream in one go; it must say what StreamDecoder says."""
    body = b"".join(blocks)
    outcomes = []
    for read in (lambda b: parse_stream(200, SSE, b), _line_by_line):
        try:
            outcomes.append(("answer", read(body)))
        except ProviderError as error:
            outcomes.append((type(error).__name__, error.message))
    assert outcomes[0] == outcomes[1]
