"""`ChatGptEsSession`: one cookie jar, the chat page scraped with it, and the nonce reused for every
prompt, in whichever chat generation the page speaks (PROTOCOL.md §C).

The page is scraped once and decides how prompts are asked: the legacy chat (one POST) or an
AIPKit bot (a cache POST, then the streamed GET). Concurrent callers share one scrape. When the
site rejects the nonce, a fresh one is fetched — AIPKit's refresh action where the page advertises
it, else the page again — and the prompt is sent once more without counting an attempt; a 400 "0"
(the site switched generation) re-reads the page the same way. A Cloudflare challenge retires the
cookie jar (the guest id stays: it is the caller's identity on the site). Every response is capped
at `max_answer_bytes` by libcurl itself. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from batchgpt.errors import (
    NonceError,
    NoNonceError,
    ProviderError,
    SiteChangedError,
    quote_body,
)
from batchgpt.providers.base import Answer, Messages
from batchgpt.providers.chatgpt_es import aipkit, legacy
from batchgpt.providers.chatgpt_es.answer import (
    UnknownActionError,
    check_status,
    is_cloudflare_challenge,
)
from batchgpt.providers.chatgpt_es.message import SYSTEM_PROMPT, format_message
from batchgpt.providers.chatgpt_es.page import AipkitBot, ChatPage, LegacyChat, read_chat_page
from batchgpt.providers.chatgpt_es.wordpress import AJAX_PATH, CHATS
from batchgpt.providers.http import DEFAULT_MAX_ANSWER_BYTES, curl_transport

if TYPE_CHECKING:
    from batchgpt.pacing import Pacer
    from batchgpt.providers.transport import CurlTransport, StreamedReply

T = TypeVar("T")
#: What a session asks: the legacy chat widget, or one AIPKit bot.
Chat = LegacyChat | AipkitBot

IMPERSONATE = "chrome"


def browser_headers(origin: str, referer: str) -> dict[str, str]:
    """What the plugin's own script sends with its POSTs; the user-agent and client hints come
    with browser impersonation."""
    return {
        "origin": origin,
        "referer": referer,
        "accept": "*/*",
        "accept-language": "en-US,en;q=0.9",
        "content-type": "application/x-www-form-urlencoded; charset=UTF-8",
        "x-requested-with": "XMLHttpRequest",
    }


#: What a browser's EventSource sends instead, for the AIPKit answer stream.
STREAM_HEADERS = {"accept": "text/event-stream", "cache-control": "no-cache"}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request a session made, for `batchgpt probe`."""

    kind: str  # page, chat, cache, stream, nonce
    method: str
    url: str
    status: int | None
    seconds: float
    error: str | None = None


class MissingBotError(SiteChangedError):
    """The bot asked for (`bot_id`) is not on the page."""


class _CookieJar:
    """A transport (one cookie jar) plus the number of requests still using it."""

    def __init__(self, http: CurlTransport) -> None:
        self.http = http
        self.in_flight = 0
        self.retired = False


class ChatGptEsSession:
    """A reusable connection to one site running the AI Power chat, through one proxy."""

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
        chat: str = "auto",
        bot_id: int | None = None,
        guest_id: str | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        on_request: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        if chat not in CHATS:
            raise ValueError(f"chat must be one of {', '.join(CHATS)}, not {chat!r}")
        parts = urlsplit(url)
        self.url = url.rstrip("/") if parts.path in ("", "/") else url
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.api_endpoint = api_endpoint or self.origin + AJAX_PATH
        self.proxy = proxy
        self.timeout = timeout
        self.limiter = limiter
        self.max_clients = max_clients
        self.system_prompt = system_prompt
        self.chat = chat
        self.bot_id = bot_id
        #: The guest `session_id` AIPKit knows this caller by; kept for the session's life.
        self.guest_id = guest_id or str(uuid.uuid4())
        self._client_id = legacy.client_id(self.guest_id)
        self.max_answer_bytes = max_answer_bytes
        self.on_request = on_request
        self.scrapes = self.posts = self.streams = self.refreshes = 0
        self.page: ChatPage | None = None
        self._jar: _CookieJar | None = None
        self._chat: Chat | None = None
        self._nonce_action: str | None = None
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

    @property
    def generation(self) -> str | None:
        """The chat generation this session speaks ('legacy' or 'aipkit'), once it has read the
        page."""
        if self._chat is None:
            return None
        return "aipkit" if isinstance(self._chat, AipkitBot) else "legacy"

    # asking -----------------------------------------------------------------------------------
    async def ask(
        self, messages: Messages, model: str, params: Mapping[str, Any] | None = None
    ) -> Answer:
        """The answer to `messages` (the model is the site's own; it is never sent)."""
        return Answer(await self.send(format_message(messages, self.system_prompt)))

    async def send(self, message: str) -> str:
        """Send one message as it is and return the whole answer."""
        return await self._with_fresh_chat(lambda chat: self._send_once(chat, message))

    async def stream(self, message: str) -> AsyncIterator[str]:
        """Send one message and yield the answer as the site sends it."""
        chat = await self.connect()
        for repeat in (False, True):
            yielded = False
            try:
                async for piece in self._stream_once(chat, message):
                    yielded = True
                    yield piece
                return
            except (NonceError, UnknownActionError) as error:
                if yielded or repeat:
                    raise
                chat = await self._recover(chat, error)

    async def connect(self) -> Chat:
        """What this session asks (scraping the page on first use): the legacy chat or a bot."""
        if self._chat is None:
            async with self._scrape_lock:
                if self._chat is None:
                    self._chat = self._choose(await self._scrape())
        return self._chat

    async def _with_fresh_chat(self, send: Callable[[Chat], Awaitable[T]]) -> T:
        """Run `send`; when the nonce failed or the site switched generation, get a fresh chat
        and run it once more (not an attempt: the prompt itself did not fail)."""
        chat = await self.connect()
        try:
            return await send(chat)
        except (NonceError, UnknownActionError) as error:
            chat = await self._recover(chat, error)
        return await send(chat)

    async def _send_once(self, chat: Chat, message: str) -> str:
        if isinstance(chat, LegacyChat):
            status, headers, body = await self._request(
                "chat",
                "POST",
                self.api_endpoint,
                data=legacy.chat_form(chat, message, self.url, self._client_id),
            )
            return legacy.parse_answer(status, headers, body)
        try:
            return await self._aipkit_answer(chat, await self._cache(chat, message))
        except aipkit.CacheMissError:
            pass  # cache it once more (§C2): not an attempt, the site lost the message
        return await self._aipkit_answer(chat, await self._cache(chat, message))

    async def _aipkit_answer(self, bot: AipkitBot, key: str) -> str:
        status, headers, body = await self._request(
            "stream",
            "GET",
            self._ajax_url(bot),
            params=aipkit.stream_query(bot, key, self.guest_id),
            headers=STREAM_HEADERS,
            paced=False,
        )
        return aipkit.parse_stream(status, headers, body)

    async def _stream_once(self, chat: Chat, message: str) -> AsyncIterator[str]:
        if isinstance(chat, LegacyChat):
            pieces = self._legacy_stream(chat, message)
        else:
            pieces = self._aipkit_stream(chat, message)
        async for piece in pieces:
            yield piece

    async def _legacy_stream(self, chat: LegacyChat, message: str) -> AsyncIterator[str]:
        data = legacy.chat_form(chat, message, self.url, self._client_id)
        async with self._open("chat", "POST", self.api_endpoint, data=data) as stream:
            reply = stream.reply
            if reply.status != 200 or not legacy.is_event_stream(reply.headers, b""):
                body = await stream.body()
                yield legacy.parse_answer(reply.status, reply.headers, body)
                return
            decoder = legacy.SseDecoder()
            async for line in reply.aiter_lines():
                if delta := decoder.feed(line):
                    yield delta
            decoder.finish()

    async def _aipkit_stream(self, bot: AipkitBot, message: str) -> AsyncIterator[str]:
        for repeat in (False, True):
            key = await self._cache(bot, message)
            query = aipkit.stream_query(bot, key, self.guest_id)
            async with self._open(
                "stream",
                "GET",
                self._ajax_url(bot),
                params=query,
                headers=STREAM_HEADERS,
                paced=False,
            ) as stream:
                reply = stream.reply
                if reply.status != 200 or "text/event-stream" not in reply.headers.get(
                    "content-type", ""
                ):
                    body = await stream.body()
                    yield aipkit.parse_stream(reply.status, reply.headers, body)
                    return
                decoder = aipkit.StreamDecoder()
                try:
                    async for line in reply.aiter_lines():
                        if delta := decoder.feed(line):
                            yield delta
                    decoder.finish()
                    return
                except aipkit.CacheMissError:
                    if repeat:  # a miss is the stream's first event: nothing was yielded
                        raise

    async def _cache(self, bot: AipkitBot, message: str) -> str:
        status, headers, body = await self._request(
            "cache", "POST", self._ajax_url(bot), data=aipkit.cache_form(bot, message)
        )
        return aipkit.read_cache_reply(status, headers, body)

    def _ajax_url(self, bot: AipkitBot) -> str:
        """The page's own `ajaxUrl` is where the chat is asked, whatever the caller assumed."""
        return bot.ajax_url or self.origin + AJAX_PATH

    # the page ---------------------------------------------------------------------------------
    async def _scrape(self) -> ChatPage:
        self.scrapes += 1
        status, headers, body = await self._request("page", "GET", self.url)
        check_status(status, headers, body)
        self.page = read_chat_page(body)
        self._nonce_action = self.page.aipkit.nonce_action if self.page.aipkit else None
        if self.page.generation is None:
            raise NoNonceError(
                f"no chat on {self.url} (looked for AIPKit's data-config, and the legacy "
                f"data-nonce, wpaicgParams, _wpnonce, wpaicg_nonce): {quote_body(body, 120)}",
                http_status=status,
            )
        return self.page

    def _choose(self, page: ChatPage) -> Chat:
        """The chat to speak on `page` (PROTOCOL.md §C1): `chat`, or what the page has."""
        if page.aipkit is not None and self.chat in ("auto", "aipkit"):
            bot = page.aipkit.bot(self.bot_id)
            if bot is None:
                found = ", ".join(str(b.bot_id) for b in page.aipkit.bots)
                raise MissingBotError(f"bot {self.bot_id} is not on {self.url} (bots: {found})")
            return bot
        if page.legacy is not None and self.chat in ("auto", "legacy"):
            return page.legacy
        wanted = "an AIPKit chat" if self.chat == "aipkit" else "a legacy chat"
        raise NoNonceError(
            f"--chat {self.chat}: no {wanted.split(' ', 1)[1]} on {self.url}, which carries "
            f"the {page.generation} chat (use --chat auto)"
        )

    async def _recover(self, stale: Chat, error: ProviderError) -> Chat:
        """A fresh chat after `error` (a failed nonce or an unknown action), fetched once however
        many callers ask at the same time; the error again when nothing changed."""
        async with self._scrape_lock:
            if self._chat is not None and self._chat is not stale:
                return self._chat  # another caller already refreshed it
            if (
                isinstance(error, NonceError)
                and isinstance(stale, AipkitBot)
                and (self._nonce_action)
            ):
                self._chat = dataclasses.replace(stale, nonce=await self._fresh_nonce(stale))
                return self._chat
            self._chat = None
            self._chat = self._choose(await self._scrape())
            if isinstance(error, UnknownActionError) and type(self._chat) is type(stale):
                raise error  # the page still shows the chat the site does not know
            return self._chat

    async def _fresh_nonce(self, bot: AipkitBot) -> str:
        """A new nonce from the action the page advertised (2.4.71), no page load needed."""
        assert self._nonce_action is not None
        self.refreshes += 1
        status, headers, body = await self._request(
            "nonce",
            "POST",
            self._ajax_url(bot),
            data={"action": self._nonce_action, "bot_id": str(bot.bot_id)},
        )
        return aipkit.read_nonce_reply(status, headers, body)

    # HTTP -------------------------------------------------------------------------------------
    async def _request(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        paced: bool = True,
        **kwargs: Mapping[str, str],
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One whole request; `paced` ones wait for the run's rate limiter first. The header
        names are in lower case."""
        self._count(kind)
        jar = await self._acquire()
        try:
            await self._pace(paced)
            started = time.monotonic()
            try:
                status, headers, body = await jar.http.request(method, url, **kwargs)
            except ProviderError as error:
                self._record(kind, method, url, None, started, error)
                raise
            self._record(kind, method, url, status, started, None)
            self._retire_on_challenge(jar, status, headers, body)
        finally:
            await self._release(jar)
        return status, headers, body

    def _open(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        paced: bool = True,
        **kwargs: Mapping[str, str],
    ) -> _OpenStream:
        """A streamed request, to read with `async with`."""
        self._count(kind)
        return _OpenStream(self, kind, method, url, paced, kwargs)

    def _count(self, kind: str) -> None:
        if kind in ("chat", "cache"):
            self.posts += 1
        elif kind == "stream":
            self.streams += 1

    async def _pace(self, paced: bool) -> None:
        if paced and self.limiter is not None:
            await self.limiter.acquire()

    def _record(
        self,
        kind: str,
        method: str,
        url: str,
        status: int | None,
        started: float,
        error: ProviderError | None,
    ) -> None:
        if self.on_request is not None:
            seconds = time.monotonic() - started
            message = None if error is None else f"{error.kind}: {error.message}"
            self.on_request(RequestRecord(kind, method, url, status, seconds, message))

    def _retire_on_challenge(
        self, jar: _CookieJar, status: int, headers: Mapping[str, str], body: bytes
    ) -> None:
        """A challenged cookie jar is never used again: the next request gets a fresh one."""
        if is_cloudflare_challenge(status, headers, body):
            jar.retired = True
            if jar is self._jar:
                self._jar = None
                self._chat = None

    async def _acquire(self) -> _CookieJar:
        if self._jar is None:
            self._jar = _CookieJar(self._new_http())
        self._jar.in_flight += 1
        return self._jar

    async def _release(self, jar: _CookieJar) -> None:
        jar.in_flight -= 1
        if jar.retired and jar.in_flight == 0:
            await jar.http.close()

    def _new_http(self) -> CurlTransport:
        return curl_transport(
            headers=browser_headers(self.origin, self.url),
            browser=IMPERSONATE,
            proxy=self.proxy,
            timeout=self.timeout,
            max_answer_bytes=self.max_answer_bytes,
            max_clients=self.max_clients,
        )


class _OpenStream:
    """`async with session._open(...) as stream`: a streamed reply (`stream.reply`) whose cookie
    jar is held until it is closed."""

    def __init__(
        self,
        session: ChatGptEsSession,
        kind: str,
        method: str,
        url: str,
        paced: bool,
        kwargs: dict[str, Mapping[str, str]],
    ) -> None:
        self._session = session
        self._args = (kind, method, url, paced, kwargs)
        self._jar: _CookieJar | None = None
        self.reply: StreamedReply

    async def __aenter__(self) -> _OpenStream:
        kind, method, url, paced, kwargs = self._args
        session = self._session
        self._jar = await session._acquire()
        try:
            await session._pace(paced)
            started = time.monotonic()
            try:
                self.reply = await self._jar.http.stream(method, url, **kwargs)
            except ProviderError as error:
                session._record(kind, method, url, None, started, error)
                raise
            try:
                session._record(kind, method, url, self.reply.status, started, None)
            except BaseException:
                await self.reply.aclose()
                raise
        except BaseException:
            await session._release(self._jar)
            raise
        return self

    async def body(self) -> bytes:
        """The whole body of a response that is not the expected stream (an error page)."""
        assert self._jar is not None
        reply = self.reply
        body = await reply.read()
        self._session._retire_on_challenge(self._jar, reply.status, reply.headers, body)
        return body

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._jar is not None
        try:
            await self.reply.aclose()
        finally:
            await self._session._release(self._jar)
