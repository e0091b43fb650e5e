"""Every error batchgpt raises, each knowing its `kind` and whether it is worth retrying.

The `kind` is a short stable string written into result records; `retryable` decides whether the
retry policy tries again; `halts_after` says how many of them in a row mean the service will refuse
every prompt, so the run stops (exit 69) instead of writing the same error for the rest. Callers
catch by meaning::

    BatchGptError
    ├── MissingRequirementsError           curl_cffi (or an extra) is not installed
    ├── ModelNotSupportedError  (ValueError)  model_not_supported  final
    ├── ProviderError           (ValueError)  the service failed to answer
    │   ├── RetryableError
    │   │   ├── NonceError                 nonce          the nonce failed again after a refresh
    │   │   ├── RateLimitedError           rate_limited   429; carries Retry-After
    │   │   ├── CloudflareChallengeError   cloudflare     needs a fresh session
    │   │   ├── ServerError                server_error   5xx
    │   │   ├── RequestTimeoutError        timeout
    │   │   ├── TransportError             connection     refused, reset, proxy down
    │   │   └── BadResponseError           bad_response   not JSON, a cut stream, an answer too big
    │   └── FinalError
    │       ├── CaptchaError               captcha        the site's consent gate
    │       ├── SiteError                  site_error     the service refused, with its message
    │       ├── NoNonceError               no_nonce       no chat on the page      halts after 3
    │       ├── SiteChangedError           site_changed   400 "0", another status  halts after 3
    │       ├── QuotaError                 quota          a quota or token limit   halts at once
    │       ├── BlockedError               blocked        this IP is banned: benches its proxy
    │       ├── AuthError                  auth           the API key is refused   halts at once
    │       ├── BadRequestError            bad_request    400: the API's own message
    │       └── NotFoundError              not_found      404: no such model (or path)
    └── JobError                           the run cannot go on; carries the exit code
        ├── UsageError                     2   bad option, unreadable input
        ├── InputChangedError              2   the input or result-shaping options changed
        ├── CorruptOutputError             2   a bad line in the middle of the output
        ├── MergeConflictError             65  shard outputs overlap or miss lines
        ├── SiteUnreachableError           69  the breaker gave up
        ├── SiteHaltedError                69  a quota, a ban on every proxy, a broken site
        ├── OutputWriteError               74  an I/O error on the job's files (disk full, EIO)
        └── JobLockedError                 75  another run holds the job's lock

Records of bad input lines use the kind `invalid_input` (never sent, never retried).
`file_error` turns an OSError on one of the job's files into the run's error, naming the file.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from typing import ClassVar

from batchgpt.redact import redact

INVALID_INPUT = "invalid_input"
#: The longest piece of a response body quoted in an error message.
QUOTE_LIMIT = 300


def quote_body(body: bytes | str, limit: int = QUOTE_LIMIT) -> str:
    """A short, one-line, printable excerpt of a response body for an error message."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class BatchGptError(Exception):
    """Base of every batchgpt error; the message is one line without credentials."""

    kind: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        self.message = redact(" ".join(str(message).split()))
        self.http_status = http_status
        super().__init__(self.message)


class MissingRequirementsError(BatchGptError):
    kind = "missing_requirements"


class ModelNotSupportedError(BatchGptError, ValueError):
    kind = "model_not_supported"


class ProviderError(BatchGptError, ValueError):
    """The service did not give an answer."""

    #: This many in a row, across the whole run, stop it (0: never; each prompt fails alone).
    halts_after: ClassVar[int] = 0


class RetryableError(ProviderError):
    retryable = True


class NonceError(RetryableError):
    kind = "nonce"


class RateLimitedError(RetryableError):
    kind = "rate_limited"

    def __init__(
        self, message: str, *, http_status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.retry_after = retry_after


class CloudflareChallengeError(RetryableError):
    kind = "cloudflare"


class ServerError(RetryableError):
    kind = "server_error"


class RequestTimeoutError(RetryableError):
    kind = "timeout"


class TransportError(RetryableError):
    kind = "connection"


class BadResponseError(RetryableError):
    kind = "bad_response"


class FinalError(ProviderError):
    retryable = False


class CaptchaError(FinalError):
    kind = "captcha"


class SiteError(FinalError):
    kind = "site_error"


class NoNonceError(FinalError):
    kind = "no_nonce"
    halts_after = 3


class SiteChangedError(FinalError):
    kind = "site_changed"
    halts_after = 3


class QuotaError(FinalError):
    """The service's quota or token limit is reached: every further prompt would be refused."""

    kind = "quota"
    halts_after = 1


class BlockedError(FinalError):
    """The service banned the IP this request came from; another proxy may still be welcome."""

    kind = "blocked"


class AuthError(FinalError):
    """The service refused the credentials: every further prompt would be refused."""

    kind = "auth"
    halts_after = 1


class BadRequestError(FinalError):
    """The API refused this request as it is (a bad parameter, too long a prompt)."""

    kind = "bad_request"


class NotFoundError(FinalError):
    """The API knows no such model (or no such endpoint) for this request."""

    kind = "not_found"


#: Whether a recorded error kind may succeed when tried again (used by --retry-errors).
RETRYABLE_KINDS: frozenset[str] = frozenset(
    cls.kind
    for cls in (
        NonceError,
        RateLimitedError,
        CloudflareChallengeError,
        ServerError,
        RequestTimeoutError,
        TransportError,
        BadResponseError,
    )
)

#: Kinds that mean "the site cannot be reached": they feed the circuit breaker.
UNREACHABLE_KINDS: frozenset[str] = frozenset(
    {ServerError.kind, RequestTimeoutError.kind, TransportError.kind, CloudflareChallengeError.kind}
)


class JobError(BatchGptError):
    """The run cannot go on; `exit_code` is what the CLI exits with."""

    exit_code: ClassVar[int] = 2


class UsageError(JobError):
    kind = "usage"


class InputChangedError(JobError):
    kind = "input_changed"


class CorruptOutputError(JobError):
    kind = "corrupt_output"


class MergeConflictError(JobError):
    kind = "merge_conflict"
    exit_code = 65


class SiteUnreachableError(JobError):
    kind = "unreachable"
    exit_code = 69


class SiteHaltedError(JobError):
    """The service refuses every prompt (quota, ban, broken site); the rest waits for a rerun."""

    kind = "halted"
    exit_code = 69


class OutputWriteError(JobError):
    kind = "io"
    exit_code = 74


class JobLockedError(JobError):
    kind = "locked"
    exit_code = 75


#: OSError numbers a person fixes by changing a path or its permissions: exit 2, not 74.
PATH_ERRNOS: frozenset[int] = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)
_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.EIO: "I/O error",
}


def file_error(action: str, path: str | PathLike[str], exc: OSError) -> JobError:
    """`exc`, raised trying to `action` `path`, as one line naming the file: a path the user must
    fix (permissions, a missing folder, a read-only file system) is a UsageError (exit 2), any
    other failure (a full disk, EIO) an OutputWriteError (exit 74)."""
    reason = _REASONS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
    message = f"cannot {action} {path}: {reason}; state is resumable, run again once fixed"
    if exc.errno in PATH_ERRNOS:
        return UsageError(message)
    return OutputWriteError(message)


@contextmanager
def file_errors(action: str, path: str | PathLike[str]) -> Iterator[None]:
    """Raise any OSError of the block as `file_error(action, path, …)`."""
    try:
        yield
    except OSError as exc:
        raise file_error(action, path, exc) from exc
