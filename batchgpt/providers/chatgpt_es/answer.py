"""Turn what admin-ajax.php sent back into an answer or a classified error (PROTOCOL.md §3)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import orjson

from batchgpt.errors import (
    BadResponseError,
    CaptchaError,
    CloudflareChallengeError,
    NonceError,
    ProviderError,
    RateLimitedError,
    ServerError,
    SiteChangedError,
    SiteError,
    quote_body,
)

CAPTCHA_TEXT = "Du musst das Kästchen anklicken!"
_CHALLENGE_MARKERS = (
    b"<title>Just a moment...</title>",
    b"cf-please-wait",
    b"cf-spinner-please-wait",
    b"Attention Required! | Cloudflare",
)
_EXPIRED_LINK = b"The link you followed has expired"
_NONCE_FAILED = "Nonce verification failed"
_LIMIT_FLAGS = ("tokenLimitReached", "ipBanned", "messageFlagged")


def is_cloudflare_challenge(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether a response is Cloudflare's interstitial rather than the site itself."""
    if headers.get("cf-mitigated", "").lower() == "challenge":
        return True
    head = body[:16384]
    return status in (403, 503) and any(marker in head for marker in _CHALLENGE_MARKERS)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def check_status(status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Raise the error a non-answer HTTP response stands for; return for a 200 from the site."""
    if is_cloudflare_challenge(status, headers, body):
        raise CloudflareChallengeError(f"Cloudflare challenge (HTTP {status})", http_status=status)
    if status == 200:
        return
    if status == 403 and (body.strip() == b"-1" or _EXPIRED_LINK in body[:4096]):
        raise NonceError(f"nonce rejected: HTTP 403 {quote_body(body, 60)}", http_status=403)
    if status == 429:
        raise RateLimitedError(
            "rate limited: HTTP 429", retry_after=parse_retry_after(headers.get("retry-after"))
        )
    if status >= 500:
        raise ServerError(f"server error: HTTP {status} {quote_body(body)}", http_status=status)
    if status == 400 and body.strip() == b"0":
        raise SiteChangedError(
            "admin-ajax answered 400 '0': the site no longer knows this chat action",
            http_status=400,
        )
    raise SiteChangedError(f"unexpected HTTP {status}: {quote_body(body)}", http_status=status)


def _site_refusal(obj: dict[str, object]) -> ProviderError | None:
    msg = obj.get("msg")
    message = quote_body(msg) if isinstance(msg, str) and msg else "the site refused the message"
    if obj.get("status") == "error":
        if _NONCE_FAILED in message:
            return NonceError(f"nonce rejected: {message}", http_status=200)
        return SiteError(message, http_status=200)
    if any(obj.get(flag) for flag in _LIMIT_FLAGS):
        return SiteError(message, http_status=200)
    return None


def answer_from_json(obj: object) -> str:
    """The answer in a JSON reply, or the error it stands for."""
    if not isinstance(obj, dict):
        raise BadResponseError(f"JSON reply is not an object: {quote_body(orjson.dumps(obj))}")
    if refusal := _site_refusal(obj):
        raise refusal
    data = obj.get("data")
    if isinstance(data, str):
        return _checked_answer(data)
    if isinstance(obj.get("msg"), str):
        raise SiteError(quote_body(obj["msg"]), http_status=200)  # type: ignore[arg-type]
    raise BadResponseError(f"reply has neither data nor msg: {quote_body(orjson.dumps(obj))}")


class SseDecoder:
    """Decode the plugin's `text/event-stream` line by line into answer deltas."""

    def __init__(self) -> None:
        self.done = False

    def feed(self, line: bytes) -> str:
        """The delta text a line carries ('' for none); raises on a site error event."""
        line = line.strip()
        if not line.startswith(b"data:"):
            return ""
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return ""
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise BadResponseError(f"broken stream event: {quote_body(payload)}") from exc
        if not isinstance(event, dict):
            raise BadResponseError(f"broken stream event: {quote_body(payload)}")
        if refusal := _site_refusal(event):
            raise refusal
        try:
            content = event["choices"][0]["delta"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            return ""
        if not isinstance(content, str):
            return ""
        return content

    def finish(self) -> None:
        """Raise when the stream ended before `[DONE]` (a truncated answer)."""
        if not self.done:
            raise BadResponseError("stream ended before [DONE]")


def is_event_stream(headers: Mapping[str, str], body_start: bytes) -> bool:
    return "text/event-stream" in headers.get("content-type", "") or body_start.startswith(b"data:")


def parse_answer(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """The answer in a complete response, or the classified error it stands for."""
    check_status(status, headers, body)
    if is_event_stream(headers, body[:5]):
        decoder = SseDecoder()
        text = "".join(decoder.feed(line) for line in body.splitlines())
        decoder.finish()
        return _checked_answer(text)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadResponseError(f"reply is not JSON: {quote_body(body)}", http_status=200) from exc
    return answer_from_json(obj)


def _checked_answer(text: str) -> str:
    if CAPTCHA_TEXT in text:
        raise CaptchaError(quote_body(text), http_status=200)
    return text
