"""The AIPKit chat (plugin ≥ 2.3, PROTOCOL.md §B): what to send and how to read what comes back.

A prompt is two requests: a POST that caches the message under a single-use key, then a GET whose
event stream carries the answer (`data: {"delta": …}` events, then `event: done`). The site keeps
the conversation by `conversation_uuid`, so every request gets a fresh one; the guest `session_id`
is the caller's identity on the site and stays the same. Errors arrive as `event: error` inside a
200 stream, and `classify_error` turns their text into the error hierarchy (§B4).
"""

from __future__ import annotations

import random
import re
import string
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from batchgpt.errors import (
    BadResponseError,
    BlockedError,
    NonceError,
    ProviderError,
    QuotaError,
    RateLimitedError,
    ServerError,
    SiteChangedError,
    SiteError,
    quote_body,
)
from batchgpt.providers.chatgpt_es.answer import check_status, checked_answer
from batchgpt.providers.chatgpt_es.page import AipkitBot

CACHE_ACTION = "aipkit_cache_sse_message"
STREAM_ACTION = "aipkit_frontend_chat_stream"
_BASE36 = string.digits + string.ascii_lowercase
_API_ERROR = re.compile(r"API Error: (?P<text>.*?)(?: \(Code: (?P<code>[^()]*)\))?\s*$", re.DOTALL)


class CacheMissError(BadResponseError):
    """The site no longer holds the cached message (its key is single-use and lives 60 s)."""


def cache_form(bot: AipkitBot, message: str) -> dict[str, str]:
    """Step 1 (§B3): the message, unchanged, cached for the stream that follows."""
    return {
        "action": CACHE_ACTION,
        "message": message,
        "_ajax_nonce": bot.nonce,
        "bot_id": str(bot.bot_id),
        "user_client_message_id": client_message_id(bot.bot_id),
    }


def client_message_id(bot_id: int) -> str:
    """`aipkit-client-msg-<bot>-<ms>-<5 base-36 chars>`, as the plugin's own script makes it."""
    suffix = "".join(random.choices(_BASE36, k=5))
    return f"aipkit-client-msg-{bot_id}-{int(time.time() * 1000)}-{suffix}"


def stream_query(bot: AipkitBot, cache_key: str, session_id: str) -> dict[str, str]:
    """Step 2 (§B4): what a browser's EventSource sends, with a new conversation every time."""
    query = {
        "action": STREAM_ACTION,
        "cache_key": cache_key,
        "bot_id": str(bot.bot_id),
        "session_id": session_id,
        "conversation_uuid": str(uuid.uuid4()),
    }
    if bot.post_id > 0:
        query["post_id"] = str(bot.post_id)
    query["_ts"] = str(int(time.time() * 1000))
    query["_ajax_nonce"] = bot.nonce
    return query


def _json_reply(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """A WordPress `wp_send_json_*` reply; anything else is classified by its status first."""
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        reply = None
    if not isinstance(reply, dict) or "success" not in reply:
        check_status(status, headers, body)
        raise BadResponseError(
            f"reply is not WordPress JSON: {quote_body(body)}", http_status=status
        )
    return reply


def read_cache_reply(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """The cache key, or the error the cache POST's reply stands for (§B3)."""
    reply = _json_reply(status, headers, body)
    data = reply.get("data")
    data = data if isinstance(data, dict) else {}
    if reply.get("success") is True:
        key = data.get("cache_key")
        if isinstance(key, str) and key:
            return key
        raise BadResponseError(f"cache reply without a key: {quote_body(body)}", http_status=status)
    message = data.get("message")
    text = quote_body(message) if isinstance(message, str) else quote_body(body)
    if data.get("code") == "nonce_failure_cache_sse":
        raise NonceError(f"nonce rejected: {text}", http_status=status)
    if status >= 500:
        raise ServerError(f"the site could not cache the message: {text}", http_status=status)
    raise SiteError(f"{text} ({data.get('code') or f'HTTP {status}'})", http_status=status)


def read_nonce_reply(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """The fresh nonce of `aipkit_get_frontend_chat_nonce` (2.4.71, §B2)."""
    reply = _json_reply(status, headers, body)
    data = reply.get("data")
    nonce = data.get("nonce") if isinstance(data, dict) else None
    if reply.get("success") is not True or not isinstance(nonce, str) or not nonce:
        raise BadResponseError(
            f"nonce reply without a nonce: {quote_body(body)}", http_status=status
        )
    return nonce


def classify_error(text: str, data: Mapping[str, Any]) -> ProviderError:
    """The error an `event: error` stands for, keeping the site's text (§B4 table)."""
    shown = quote_body(text) or "the site reported an error without text"
    if "Security check failed" in text:
        return NonceError(f"nonce rejected: {shown}", http_status=200)
    if "Message not found in cache" in text or "Message cache key is missing" in text:
        return CacheMissError(shown, http_status=200)
    if data.get("quota_notice") or "reached your quota" in text or "token limit" in text:
        return QuotaError(shown, http_status=200)
    if "Access from your IP address has been blocked" in text:
        return BlockedError(shown, http_status=200)
    if any(
        missing in text
        for missing in ("Conversation ID is missing", "Session ID is missing", "Invalid chatbot")
    ):
        return SiteChangedError(shown, http_status=200)
    if match := _API_ERROR.match(text):
        code = (match["code"] or "").strip().lower()
        if code == "429" or code.startswith("rate_limit"):
            return RateLimitedError(shown, http_status=200)
        if code == "insufficient_quota":
            return QuotaError(shown, http_status=200)
        # A code-less API error is the AI's own 5xx: OpenAI's carry `"code": null`.
        if not code or code.startswith("5") or code == "server_error":
            return ServerError(shown, http_status=200)
    return SiteError(shown, http_status=200)


class StreamDecoder:
    """Reads the answer stream line by line (server-sent events): the deltas of unnamed events,
    `done` at the end; an `error` event raises what it stands for; other events are ignored."""

    def __init__(self) -> None:
        self.done = False
        self._event = ""
        self._data: list[bytes] = []
        self._text: list[str] = []

    def feed(self, line: bytes) -> str:
        """The delta text the event this line completes carries ('' for none)."""
        line = line.rstrip(b"\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return ""
        field, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if field == b"event":
            self._event = value.decode("utf-8", "replace")
        elif field == b"data":
            self._data.append(value)
        return ""

    def _dispatch(self) -> str:
        event, data = self._event, b"\n".join(self._data)
        self._event, self._data = "", []
        if not data:
            return ""
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadResponseError(f"broken stream event: {quote_body(data)}") from exc
        payload = payload if isinstance(payload, dict) else {}
        if event == "error":
            error = payload.get("error")
            raise classify_error(error if isinstance(error, str) else "", payload)
        if event == "done":
            self.done = True
        elif event in ("", "message"):
            delta = payload.get("delta")
            if isinstance(delta, str):
                self._text.append(delta)
                return delta
        return ""

    def finish(self) -> str:
        """The whole answer; raises when the stream ended before `done` (a cut answer)."""
        self.feed(b"")
        if not self.done:
            raise BadResponseError("the answer stream ended before its done event", http_status=200)
        return checked_answer("".join(self._text))


def parse_stream(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """The answer in a complete stream response, or the classified error it stands for."""
    check_status(status, headers, body)
    if "text/event-stream" not in headers.get("content-type", ""):
        raise BadResponseError(f"the answer is not an event stream: {quote_body(body)}")
    if (answer := _plain_answer(body)) is not None:
        return checked_answer(answer)
    decoder = StreamDecoder()  # an error, an odd event: the decoder reads it line by line
    for line in body.split(b"\n"):
        decoder.feed(line)
    return decoder.finish()


def _plain_answer(body: bytes) -> str | None:
    """The answer of a stream that is the plain case, its events decoded in one orjson call;
    None when anything in it needs `StreamDecoder` (an error event, a field split over lines,
    CR line ends, no `done`)."""
    if b"\r" in body:
        return None
    names: list[bytes] = []
    datas: list[bytes] = []
    for block in body.split(b"\n\n"):
        name = b""
        data = None
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                if data is not None:
                    return None
                data = line[6:]
            elif line.startswith(b"event: "):
                name = line[7:]
            elif line and not line.startswith((b":", b"id: ")):
                return None
        if data is not None:
            names.append(name)
            datas.append(data)
    if b"error" in names or names[-1:] != [b"done"]:
        return None
    try:
        decoded = orjson.loads(b"[" + b",".join(datas) + b"]")
    except orjson.JSONDecodeError:
        return None
    if len(decoded) != len(names):
        return None
    pieces = []
    for name, payload in zip(names, decoded, strict=True):
        if name in (b"", b"message") and isinstance(payload, dict):
            delta = payload.get("delta")
            if isinstance(delta, str):
                pieces.append(delta)
    return "".join(pieces)
