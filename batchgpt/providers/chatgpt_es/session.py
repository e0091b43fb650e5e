"""`ChatGptEsSession`: one cookie jar and the nonce scraped with it, reused for every prompt.

The page is scraped once; later prompts reuse its nonce. When the site rejects the nonce the page
is scraped again with the same cookie jar and the prompt is sent once more, without counting an
attempt (PROTOCOL.md §3). Concurrent callers share one scrape. A Cloudflare challenge retires the
cookie jar: the next request starts a fresh one. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from batchgpt.errors import (
    MissingRequirementsError,
    NonceError,
    NoNonceError,
    RequestTimeoutError,
    TransportError,
    quote_body,
)
from batchgpt.providers.base import Answer, Messages
from batchgpt.providers.chatgpt_es.answer import (
    SseDecoder,
    check_status,
    is_cloudflare_challenge,
    is_event_stream,
    parse_answer,
)
from batchgpt.providers.chatgpt_es.message import SYSTEM_PROMPT, format_message
from batchgpt.providers.chatgpt_es.page import ChatPage, find_chat_page

if TYPE_CHECKING:
    from curl_cffi.requests import AsyncSession, Response
    from curl_cffi.requests.session import HttpMethod

    from batchgpt.pacing import Pacer

T = TypeVar("T")

AJAX_PATH = "/wp-admin/admin-ajax.php"
ACTION = "wpaicg_chat_shortcode_message"
IMPERSONATE = "chrome"
_CLIENT_ID_ALPHABET = string.ascii_letters + string.digits


def browser_headers(origin: str) -> dict[str, str]:
    """The headers the last provider sent; the user-agent comes with browser impersonation."""
    return {
        "origin": origin,
        "referer": origin,
        "accept": "*/*",
        "accept-language": "en-US,en;q=0.9",
        "content-type": "application/x-www-form-urlencoded; charset=UTF-8",
        "x-requested-with": "XMLHttpRequest",
    }


def chat_form(page: ChatPage, message: str, page_url: str) -> dict[str, str]:
    """The admin-ajax form for one prompt (PROTOCOL.md §2)."""
    return {
        "action": ACTION,
        "_wpnonce": page.nonce,
        "post_id": page.post_id,
        "url": page.url or page_url,
        "message": message,
        "bot_id": "0",
        "chatbot_identity": "shortcode",
        "wpaicg_chat_client_id": "".join(random.choices(_CLIENT_ID_ALPHABET, k=10)),
        "wpaicg_chat_history": json.dumps([f"Human: {message}"], ensure_ascii=False),
        "chat_id": str(random.randint(1, 100000)),
        "wpaicg_user_agree": "1",
    }


class _CookieJar:
    """A curl_cffi session plus the number of requests still using it."""

    def __init__(self, http: AsyncSession[Any]) -> None:
        self.http = http
        self.in_flight = 0
        self.retired = False


class ChatGptEsSession:
    """A reusable connection to one chatgpt.es site through one proxy."""

    def __init__(
        self,
        url: str = "https://chatgpt.es",
        *,
        api_endpoint: str | None = None,
        proxy: str | None = None,
        timeout: float = 120.0,
        limiter: Pacer | None = None,
        max_clients: int = 10,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        self.url = url.rstrip("/") or url
        self.api_endpoint = api_endpoint or self.url + AJAX_PATH
        self.proxy = proxy
        self.timeout = timeout
        self.limiter = limiter
        self.max_clients = max_clients
        self.system_prompt = system_prompt
        self.scrapes = 0
        self.posts = 0
        self._jar: _CookieJar | None = None
        self._page: ChatPage | None = None
        self._scrape_lock = asyncio.Lock()

    async def __aenter__(self) -> ChatGptEsSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the cookie jar in use; retired ones close when their last request ends."""
        if self._jar is not None:
            jar, self._jar = self._jar, None
            jar.retired = True
            if jar.in_flight == 0:
                await jar.http.close()

    async def ask(
        self, messages: Messages, model: str, params: Mapping[str, Any] | None = None
    ) -> Answer:
        """The answer to `messages` (the model is the site's own; it is never sent)."""
        return Answer(await self.send(format_message(messages, self.system_prompt)))

    async def send(self, message: str) -> str:
        """Send one message as it is and return the whole answer."""
        return await self._with_valid_nonce(lambda page: self._post(page, message))

    async def stream(self, message: str) -> AsyncIterator[str]:
        """Send one message and yield the answer as the site sends it."""
        opened = await self._with_valid_nonce(lambda page: self._open_stream(page, message))
        if isinstance(opened, str):
            yield opened
            return
        jar, response = opened
        try:
            decoder = SseDecoder()
            async for line in response.aiter_lines():
                if delta := decoder.feed(line):
                    yield delta
            decoder.finish()
        finally:
            await response.aclose()
            await self._release(jar)

    async def _with_valid_nonce(self, send: Callable[[ChatPage], Awaitable[T]]) -> T:
        """Run `send` with the cached nonce; on a nonce failure re-scrape and send once more."""
        page = await self._chat_page()
        try:
            return await send(page)
        except NonceError:
            await self._refresh(page)
        return await send(await self._chat_page())

    async def _chat_page(self) -> ChatPage:
        if self._page is None:
            async with self._scrape_lock:
                if self._page is None:
                    self._page = await self._scrape()
        return self._page

    async def _refresh(self, stale: ChatPage) -> None:
        """Scrape again unless another caller already replaced the stale nonce."""
        async with self._scrape_lock:
            if self._page is stale or self._page is None:
                self._page = None
                self._page = await self._scrape()

    async def _scrape(self) -> ChatPage:
        self.scrapes += 1
        status, headers, body = await self._request("GET", self.url)
        check_status(status, headers, body)
        page = find_chat_page(body)
        if page is None:
            raise NoNonceError(
                f"no chat nonce on {self.url} (looked for data-nonce, wpaicgParams, "
                f"_wpnonce, wpaicg_nonce): {quote_body(body, 120)}",
                http_status=status,
            )
        return page

    async def _post(self, page: ChatPage, message: str) -> str:
        self.posts += 1
        status, headers, body = await self._request(
            "POST", self.api_endpoint, data=chat_form(page, message, self.url)
        )
        return parse_answer(status, headers, body)

    async def _open_stream(self, page: ChatPage, message: str) -> str | tuple[_CookieJar, Response]:
        """A complete answer, or a 200 event stream still to be read (its jar held)."""
        self.posts += 1
        jar = await self._acquire()
        try:
            response = await self._send(
                jar, "POST", self.api_endpoint, data=chat_form(page, message, self.url), stream=True
            )
            headers = _lower_headers(response)
            if response.status_code == 200 and is_event_stream(headers, b""):
                return jar, response
            body = await response.acontent()
            await response.aclose()
            self._retire_on_challenge(jar, response.status_code, headers, body)
        except BaseException:
            await self._release(jar)
            raise
        await self._release(jar)
        return parse_answer(response.status_code, headers, body)

    async def _request(
        self, method: HttpMethod, url: str, **kwargs: Any
    ) -> tuple[int, dict[str, str], bytes]:
        jar = await self._acquire()
        try:
            response = await self._send(jar, method, url, **kwargs)
            headers = _lower_headers(response)
            self._retire_on_challenge(jar, response.status_code, headers, response.content)
        finally:
            await self._release(jar)
        return response.status_code, headers, response.content

    async def _send(self, jar: _CookieJar, method: HttpMethod, url: str, **kwargs: Any) -> Response:
        from curl_cffi.requests.exceptions import RequestException, Timeout

        if self.limiter is not None:
            await self.limiter.acquire()
        try:
            return await jar.http.request(method, url, timeout=self.timeout, **kwargs)
        except Timeout as exc:
            raise RequestTimeoutError(f"{method} {url} timed out after {self.timeout:g} s") from exc
        except RequestException as exc:
            raise TransportError(f"{method} {url} failed: {_curl_message(exc)}") from exc

    def _retire_on_challenge(
        self, jar: _CookieJar, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        """A challenged cookie jar is never used again: the next request gets a fresh one."""
        if is_cloudflare_challenge(status, headers, body):
            jar.retired = True
            if jar is self._jar:
                self._jar = None
                self._page = None

    async def _acquire(self) -> _CookieJar:
        if self._jar is None:
            self._jar = _CookieJar(self._new_http())
        self._jar.in_flight += 1
        return self._jar

    async def _release(self, jar: _CookieJar) -> None:
        jar.in_flight -= 1
        if jar.retired and jar.in_flight == 0:
            await jar.http.close()

    def _new_http(self) -> AsyncSession[Any]:
        try:
            from curl_cffi.requests import AsyncSession
        except ImportError as exc:
            raise MissingRequirementsError(
                'Install or update "curl_cffi" package | pip install -U curl_cffi'
            ) from exc
        return AsyncSession(
            headers=browser_headers(self.url),
            proxy=self.proxy,
            impersonate=IMPERSONATE,
            max_clients=self.max_clients,
        )


def _lower_headers(response: Response) -> dict[str, str]:
    return {key.lower(): value for key, value in response.headers.items() if value is not None}


def _curl_message(exc: Exception) -> str:
    text = str(exc).split(" See https://curl.se", 1)[0]
    return quote_body(text, 200)
