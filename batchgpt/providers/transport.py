"""`CurlTransport`: the HTTP client of one cookie jar, on libcurl handles set up once; what both
backends send with.

curl_cffi's `AsyncSession` sets every option of every request anew: the impersonated browser, the
merged headers, the cookies copied from its Python jar into libcurl and back. At zero latency that
is 40 % of a bare request loop's time, more than all of batchgpt's own work. Here a handle is set
up once with what never changes in a session (the browser it impersonates, if any, the headers,
the timeout, the answer cap, redirects, the proxy) and a request gives it only its URL and body. The
handles share one libcurl share handle (`CurlShare`: cookies, DNS and TLS sessions), so a session's
cookies are one jar across all of them, as in a browser. The option values are the ones curl_cffi
sets for the same request, so the site sees the same client; curl_cffi's own `AsyncCurl` drives
the transfers on the event loop. A body is a form or bytes, for any method but GET; methods are
given in capitals.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import AsyncIterator, Mapping
from io import BytesIO
from typing import cast
from urllib.parse import urlencode

from curl_cffi import AsyncCurl, Curl, CurlError, CurlInfo, CurlOpt, CurlShare
from curl_cffi.const import CurlLockData
from curl_cffi.requests.impersonate import resolve_latest_browser_type
from curl_cffi.requests.utils import requote_uri

from batchgpt.errors import (
    BadResponseError,
    MissingRequirementsError,
    ProviderError,
    RequestTimeoutError,
    TransportError,
    quote_body,
)

#: libcurl's CURLE_OPERATION_TIMEDOUT.
CURLE_OPERATION_TIMEDOUT = 28
#: libcurl's CURLE_FILESIZE_EXCEEDED: the response (as decoded) was over the cap.
CURLE_FILESIZE_EXCEEDED = 63
#: What curl_cffi's requests ask for unless told otherwise (impersonation may widen it).
ACCEPT_ENCODING = b"gzip, deflate, br"
MAX_REDIRECTS = 30
#: What a handle was set up for: method, streamed or whole, the headers added to the session's.
HandleKind = tuple[str, bool, tuple[tuple[str, str], ...]]
#: A request body: a form (URL-encoded) or bytes as they are.
Body = Mapping[str, str] | bytes | None


class CurlTransport:
    """Whole and streamed requests of one cookie jar, through one proxy, impersonating `browser`
    (None: libcurl as it is); at most `max_clients` at once (the others wait)."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        browser: str | None,
        proxy: str | None,
        timeout: float,
        max_answer_bytes: int,
        max_clients: int,
    ) -> None:
        self.headers = dict(headers)
        self.browser = resolve_latest_browser_type(browser) if browser else None  # type: ignore[arg-type]
        self.proxy = proxy
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._slots = asyncio.Semaphore(max_clients)
        self._multi = AsyncCurl()
        self._share = CurlShare()
        self._share.share(CurlLockData.COOKIE)
        self._idle: dict[HandleKind, list[Curl]] = {}
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: Body = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (names in lower case) and body of one whole request; a failure is the
        `ProviderError` it stands for."""
        kind = self._kind(method, False, data, headers)
        target, form = _target(url, params), _body(method, data)
        async with self._slots:
            curl = self._take(kind)
            body, head = BytesIO(), BytesIO()
            self._aim(curl, target, form)
            curl.setopt(CurlOpt.WRITEDATA, body)
            curl.setopt(CurlOpt.HEADERDATA, head)
            await self._perform(curl, kind, f"{method} {url}")
            status = cast(int, curl.getinfo(CurlInfo.RESPONSE_CODE))
            self._give_back(curl, kind)
        if not status:  # the transfer was ended without an answer (the transport closed)
            raise TransportError(f"{method} {url} failed: no response")
        return status, read_headers(head.getvalue()), body.getvalue()

    async def stream(
        self,
        method: str,
        url: str,
        *,
        data: Body = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> StreamedReply:
        """A request whose body is read as it arrives: its status and headers are known when this
        returns; `aclose()` the reply when done with it."""
        kind = self._kind(method, True, data, headers)
        target, form = _target(url, params), _body(method, data)
        await self._slots.acquire()
        try:
            reply = StreamedReply(self, self._take(kind), kind, f"{method} {url}")
        except BaseException:
            self._slots.release()
            raise
        try:
            self._aim(reply.curl, target, form)
            await reply.start()
        except BaseException:
            await reply.aclose()
            raise
        return reply

    async def close(self) -> None:
        """Close every handle; only once no request is in flight (AsyncCurl would end those as
        if they had finished)."""
        self._closed = True
        for handles in self._idle.values():
            for curl in handles:
                curl.close()
        self._idle.clear()
        await self._multi.close()
        with contextlib.suppress(CurlError):  # a reply never closed holds it: freed with it
            self._share.close()

    # handles ----------------------------------------------------------------------------------
    @staticmethod
    def _kind(
        method: str, streamed: bool, data: object, headers: Mapping[str, str] | None
    ) -> HandleKind:
        if data is not None and method == "GET":
            raise ValueError("a GET sends no form: its parameters go in `params`")
        return (method, streamed, tuple(headers.items()) if headers else ())

    def _take(self, kind: HandleKind) -> Curl:
        idle = self._idle.setdefault(kind, [])
        return idle.pop() if idle else self._new_handle(*kind)

    def _new_handle(
        self, method: str, streamed: bool, extra_headers: tuple[tuple[str, str], ...]
    ) -> Curl:
        """A handle with the options curl_cffi sets for this kind of request."""
        curl = Curl()
        if method == "POST":
            curl.setopt(CurlOpt.POST, 1)
        elif method != "GET":
            curl.setopt(CurlOpt.CUSTOMREQUEST, method.encode())
        headers = {**self.headers, **dict(extra_headers)}
        lines = [f"{name}: {value}".encode() for name, value in headers.items()]
        curl.setopt(CurlOpt.HTTPHEADER, [*lines, b"Expect:"])
        curl.setopt(CurlOpt.COOKIEFILE, b"")  # the cookie engine, its store shared below
        if streamed:  # a stream may take long: only a stall ends it (curl_cffi's choice)
            curl.setopt(CurlOpt.CONNECTTIMEOUT_MS, int(self.timeout * 1000))
            curl.setopt(CurlOpt.LOW_SPEED_LIMIT, 1)
            curl.setopt(CurlOpt.LOW_SPEED_TIME, math.ceil(self.timeout))
        else:
            curl.setopt(CurlOpt.TIMEOUT_MS, int(self.timeout * 1000))
        curl.setopt(CurlOpt.FOLLOWLOCATION, 1)
        curl.setopt(CurlOpt.MAXREDIRS, MAX_REDIRECTS)
        if self.proxy:  # as curl_cffi sets it: no connection reused across proxy credentials
            curl.setopt(CurlOpt.PROXY_CREDENTIAL_NO_REUSE, 1)
            curl.setopt(CurlOpt.PROXY, self.proxy)
        curl.setopt(CurlOpt.ACCEPT_ENCODING, ACCEPT_ENCODING)
        if self.browser and curl.impersonate(self.browser) != 0:
            curl.close()
            raise MissingRequirementsError(f"curl_cffi cannot impersonate {self.browser}")
        curl.setopt(CurlOpt.MAXFILESIZE_LARGE, self.max_answer_bytes)
        curl.setopt(CurlOpt.SHARE, self._share._curl_share)
        curl._share = self._share  # as curl_cffi does: the share lives while a handle uses it
        return curl

    def _aim(self, curl: Curl, target: bytes, body: bytes | None) -> None:
        """Give a handle what is this request's own: its URL (through a proxy, a tunnel for
        https unless the proxy is SOCKS, as curl_cffi decides) and body."""
        curl.setopt(CurlOpt.URL, target)
        if self.proxy:
            tunnel = target.startswith(b"https:") and not self.proxy.startswith("socks")
            curl.setopt(CurlOpt.HTTPPROXYTUNNEL, int(tunnel))
        if body is not None:
            curl.setopt(CurlOpt.POSTFIELDS, body)
            curl.setopt(CurlOpt.POSTFIELDSIZE, len(body))

    async def _perform(self, curl: Curl, kind: HandleKind, what: str) -> None:
        """Run one transfer to its end; a handle whose transfer was cancelled is closed."""
        try:
            await self._multi.add_handle(curl)
        except CurlError as exc:
            self._give_back(curl, kind)  # libcurl closed the connection: the handle is sound
            raise self._failure(what, exc) from exc
        except asyncio.CancelledError:
            self._drop(curl)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise TransportError(f"{what} failed: transfer lost") from None  # AsyncCurl gave up
        except BaseException:
            self._drop(curl)
            raise

    def _failure(self, what: str, exc: BaseException, *, streamed: bool = False) -> ProviderError:
        """The error a curl failure stands for: a timeout; an answer over the cap, a retryable
        bad_response naming it; else a connection failure in curl's own words."""
        code = getattr(exc, "code", None)
        if code == CURLE_OPERATION_TIMEDOUT:
            if streamed:  # a stream's limit is a stall (or the connect), not its length
                return RequestTimeoutError(f"{what} timed out: nothing for {self.timeout:g} s")
            return RequestTimeoutError(f"{what} timed out after {self.timeout:g} s")
        if code == CURLE_FILESIZE_EXCEEDED:
            return BadResponseError(
                f"{what}: the answer is larger than {self.max_answer_bytes} bytes "
                "(--max-answer-bytes)"
            )
        text = str(exc).split(" See https://curl.se", 1)[0]
        return TransportError(f"{what} failed: {quote_body(text, 200)}")

    def _drop(self, curl: Curl) -> None:
        """Stop a transfer that was not finished and close its handle."""
        with contextlib.suppress(CurlError):  # libcurl could not detach it: closing frees it
            self._multi.remove_handle(curl)
        curl.close()

    def _give_back(self, curl: Curl, kind: HandleKind) -> None:
        """An idle handle keeps its options, not its last request's buffers."""
        if self._closed:
            curl.close()
            return
        curl.clean_handles_and_buffers(clear_headers=False, clear_resolve=False)
        self._idle[kind].append(curl)


class StreamedReply:
    """A response read as it arrives: `status`, `headers`, then `aiter_lines()` or `read()`."""

    def __init__(
        self,
        transport: CurlTransport,
        curl: Curl,
        kind: HandleKind,
        what: str,
    ) -> None:
        self.curl = curl
        self.status = 0
        self.headers: dict[str, str] = {}
        self._transport = transport
        self._kind = kind
        self._what = what
        self._head = BytesIO()
        self._chunks: asyncio.Queue[bytes | ProviderError | None] = asyncio.Queue()
        self._started = asyncio.Event()
        self._done: asyncio.Future[None] | None = None
        self._failed_at_once: ProviderError | None = None
        self._closed = False

    async def start(self) -> None:
        """Start the transfer and wait for the first piece of the body (or its end)."""
        self.curl.setopt(CurlOpt.HEADERDATA, self._head)
        self.curl.setopt(CurlOpt.WRITEFUNCTION, self._write)
        try:
            self._done = self._transport._multi.add_handle(self.curl)
        except CurlError as exc:
            raise self._transport._failure(self._what, exc) from exc
        self._done.add_done_callback(self._finished)
        await self._started.wait()
        if self._failed_at_once is not None:
            raise self._failed_at_once
        self.status = cast(int, self.curl.getinfo(CurlInfo.RESPONSE_CODE))
        self.headers = read_headers(self._head.getvalue())

    def _write(self, chunk: bytes) -> int:
        self._started.set()
        self._chunks.put_nowait(chunk)
        return len(chunk)

    def _finished(self, done: asyncio.Future[None]) -> None:
        if self._closed:
            return  # stopped by `aclose`: nobody reads on
        if done.cancelled():  # AsyncCurl gave up on the handle
            error: BaseException | None = TransportError(f"{self._what} failed: transfer lost")
        else:
            error = done.exception()
        if error is not None:
            failure = error if isinstance(error, ProviderError) else None
            failure = failure or self._transport._failure(self._what, error, streamed=True)
            if not self._started.is_set():
                self._failed_at_once = failure  # before any of the body: `start` raises it
            self._chunks.put_nowait(failure)
        self._chunks.put_nowait(None)
        self._started.set()

    async def aiter_chunks(self) -> AsyncIterator[bytes]:
        """The body piece by piece; a failure midway is its `ProviderError`."""
        while (chunk := await self._chunks.get()) is not None:
            if isinstance(chunk, ProviderError):
                raise chunk
            yield chunk

    async def aiter_lines(self) -> AsyncIterator[bytes]:
        """The body line by line, without line ends (\\n, \\r\\n or \\r, one split across two
        pieces of the body too)."""
        pending = b""
        async for chunk in self.aiter_chunks():
            lines = (pending + chunk).splitlines(keepends=True)
            pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
            for line in lines:
                yield line.rstrip(b"\r\n")
        if pending:
            yield pending.rstrip(b"\r\n")

    async def read(self) -> bytes:
        """The rest of the body."""
        return b"".join([chunk async for chunk in self.aiter_chunks()])

    async def aclose(self) -> None:
        """Give the handle back, or stop the transfer if it is not finished."""
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        try:
            if self._done is not None and not self._done.done():
                transport._drop(self.curl)
            else:
                transport._give_back(self.curl, self._kind)
        finally:
            transport._slots.release()


def _target(url: str, params: Mapping[str, str] | None) -> bytes:
    """The URL to send: `url` percent-encoded as curl_cffi encodes it (a space, say, which
    libcurl refuses), then `params` as a query."""
    target = _requoted(url)
    if params:
        target = f"{target}{'&' if '?' in target else '?'}{urlencode(params)}"
    return target.encode()


@functools.lru_cache(maxsize=64)
def _requoted(url: str) -> str:
    """A transport sends to a handful of URLs (page, endpoint): each is encoded once."""
    return requote_uri(url)


def _body(method: str, data: Body) -> bytes | None:
    """What a request sends: none for GET, else `data` (a form is URL-encoded)."""
    if method == "GET":
        return None
    return data if isinstance(data, bytes) else urlencode(data or {}).encode()


def read_headers(block: bytes) -> dict[str, str]:
    """The headers of the last response in `block` (redirects put several there), names in
    lower case; a repeated header's values joined with ", "."""
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").splitlines():
        if line.startswith("HTTP/"):
            headers = {}
        elif line[:1] in (" ", "\t") and headers:
            name = next(reversed(headers))
            headers[name] += " " + line.strip()
        elif line:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers
