"""What both chat generations share in an answer: the HTTP status, Cloudflare's pages, Retry-After
and chatgpt.es's own consent gate (PROTOCOL.md §A3, §B3)."""

from __future__ import annotations

from collections.abc import Mapping

from batchgpt.errors import (
    CaptchaError,
    CloudflareChallengeError,
    NonceError,
    RateLimitedError,
    ServerError,
    SiteChangedError,
    quote_body,
)
from batchgpt.providers.http import parse_retry_after

CAPTCHA_TEXT = "Du musst das Kästchen anklicken!"
_CHALLENGE_MARKERS = (
    b"<title>Just a moment...</title>",
    b"cf-please-wait",
    b"cf-spinner-please-wait",
    b"Attention Required! | Cloudflare",
)
_EXPIRED_LINK = b"The link you followed has expired"


class UnknownActionError(SiteChangedError):
    """400 "0": admin-ajax knows no such action, so the site runs the other chat generation."""


def is_cloudflare_challenge(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether a response is Cloudflare's interstitial rather than the site itself."""
    if headers.get("cf-mitigated", "").lower() == "challenge":
        return True
    head = body[:16384]
    return status in (403, 503) and any(marker in head for marker in _CHALLENGE_MARKERS)


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
        raise UnknownActionError(
            "admin-ajax answered 400 '0': the site no longer knows this chat action",
            http_status=400,
        )
    raise SiteChangedError(f"unexpected HTTP {status}: {quote_body(body)}", http_status=status)


def checked_answer(text: str) -> str:
    """`text`, unless it is chatgpt.es's consent gate rather than an answer."""
    if CAPTCHA_TEXT in text:
        raise CaptchaError(quote_body(text), http_status=200)
    return text
