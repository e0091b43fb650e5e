"""What every backend's HTTP client shares: the transport, the answer cap, Retry-After."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from batchgpt.errors import MissingRequirementsError

if TYPE_CHECKING:
    from batchgpt.providers.transport import CurlTransport

#: The largest response read (PROTOCOL.md §C6): libcurl stops a bigger one (`--max-answer-bytes`).
DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024


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


def curl_transport(**settings: Any) -> CurlTransport:
    """A new `CurlTransport` (loaded on first use: curl_cffi stays out of start-up)."""
    try:
        from batchgpt.providers.transport import CurlTransport
    except ImportError as exc:
        raise MissingRequirementsError(
            'Install or update "curl_cffi" package | pip install -U "curl_cffi>=0.17"'
        ) from exc
    return CurlTransport(**settings)
