"""What every backend's HTTP client shares: the transport, the answer cap, Retry-After, curl's
failures."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from batchgpt.errors import (
    BadResponseError,
    MissingRequirementsError,
    ProviderError,
    TransportError,
    quote_body,
)

if TYPE_CHECKING:
    from batchgpt.providers.transport import CurlTransport

#: The largest response read (PROTOCOL.md §C6): libcurl stops a bigger one (`--max-answer-bytes`).
DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: libcurl's CURLE_FILESIZE_EXCEEDED: the response was over the cap.
CURLE_FILESIZE_EXCEEDED = 63


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # a date is rare (some 429s): kept out of every command's start-up

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def curl_failure(what: str, exc: BaseException, max_answer_bytes: int) -> ProviderError:
    """The error a curl_cffi request failure stands for: an answer over the cap is a retryable
    bad_response naming the cap, anything else a connection failure with curl's own words."""
    if getattr(exc, "code", None) == CURLE_FILESIZE_EXCEEDED:
        return too_big(what, max_answer_bytes)
    text = str(exc).split(" See https://curl.se", 1)[0]
    return TransportError(f"{what} failed: {quote_body(text, 200)}")


def too_big(what: str, max_answer_bytes: int) -> BadResponseError:
    return BadResponseError(
        f"{what}: the answer is larger than {max_answer_bytes} bytes (--max-answer-bytes)"
    )


def curl_transport(**settings: Any) -> CurlTransport:
    """A new `CurlTransport` (loaded on first use: curl_cffi stays out of start-up)."""
    try:
        from batchgpt.providers.transport import CurlTransport
    except ImportError as exc:
        raise MissingRequirementsError(
            'Install or update "curl_cffi" package | pip install -U "curl_cffi>=0.17"'
        ) from exc
    return CurlTransport(**settings)
