"""The AIPKit chat of AI Power 2.3 and 2.4.71 (PROTOCOL.md §B), as the emulator serves it.

The page shows each bot of `bots` inline or as a popup, with its `data-config`. A prompt is a
cache POST (single-use keys that live `cache_ttl` seconds; `lose_cache_keys` loses the next ones)
and the answer GET, an event stream.
The server keeps each conversation by `conversation_uuid` and logs the user's message before it
asks the AI, so a failed request is a turn too and a client that reuses a conversation gets answers
that depend on earlier requests. Guests are counted by `session_id` against `guest_quota`. The two
releases differ as the plugin's do: 2.4.71 pads the stream with a 4096-space comment, sends
`status` events, offers `aipkit_get_frontend_chat_nonce` and refuses cross-origin cache POSTs;
2.3 has none of these and words its errors otherwise.
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from batchgpt.emulator.site import AJAX_PATH, CAPTCHA_TEXT, expected_answer

if TYPE_CHECKING:
    from batchgpt.emulator.site import Emulator

CACHE_ACTION = "aipkit_cache_sse_message"
STREAM_ACTION = "aipkit_frontend_chat_stream"
REFRESH_ACTION = "aipkit_get_frontend_chat_nonce"
NONCE_ACTION = "aipkit_frontend_chat_nonce"
#: Earlier messages of a conversation the AI is given with a new one.
HISTORY_TURNS = 15
PIECE = 9
_KEY_ALPHABET = string.ascii_letters + string.digits
_TEXTS = {
    "2.4.71": {
        "nonce": "Security check failed. Please refresh the page and try again.",
        "quota": "You have reached your quota for this period.",
    },
    "2.3": {
        "nonce": "Security check failed (nonce).",
        "quota": "You have reached your token limit for this period.",
    },
}
Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


class AipkitChat:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.actions: dict[str, Handler] = {
            CACHE_ACTION: self._cache,
            REFRESH_ACTION: self._refresh,
        }
        self.get_actions: dict[str, Handler] = {STREAM_ACTION: self._stream}
        self._cache_keys: dict[str, tuple[str, float]] = {}

    @property
    def _newest(self) -> bool:
        return self.emulator.config.plugin == "2.4.71"

    def _text(self, name: str) -> str:
        return _TEXTS[self.emulator.config.plugin][name]

    # the page ---------------------------------------------------------------------------------
    def markup(self, origin: str) -> str:
        config = self.emulator.config
        mode = config.bot_mode or ("popup" if self._newest else "inline")
        parts = [self._bot(bot_id, origin, mode) for bot_id in config.bot_ids]
        if self._newest:
            parts.append(f'<script>window.aipkit_getChatNonceAction = "{REFRESH_ACTION}";</script>')
        return "".join(parts)

    def _bot(self, bot_id: int, origin: str, mode: str) -> str:
        config = self.emulator.config
        data = {
            "botId": bot_id,
            "ajaxUrl": origin + AJAX_PATH,
            "nonce": self.emulator.page_nonce(NONCE_ACTION),
            "postId": int(config.post_id) if config.post_id.isdigit() else 0,
            "theme": "custom" if self._newest else "dark",
            "popupEnabled": mode == "popup",
            "popupPosition": "bottom-right",
            "headerName": "Customer Support",
            "enableStarters": True,
            "starters": ["What can you do?", "Tell me a fun fact"],
            "requireConsentCompliance": False,
            "provider": "OpenAI",
            "enableOpenAIConversationState": False,
            "text": {
                "sendMessage": "Send Message",
                "typeMessage": "Type your message...",
                "streamError": "Stream error. Please try again.",
                "initialGreeting": "Hello there! <¿Qué tal?> & “bienvenido”",
            },
        }
        # What the plugin prints: wp_json_encode (escaped slashes) inside esc_attr, in ' quotes.
        config_attr = html.escape(json.dumps(data, ensure_ascii=False).replace("/", "\\/"))
        inner = (
            f'<div class="aipkit_chat_container aipkit-theme-dark" id="aipkit_chat_container_'
            f'{bot_id}" data-bot-id="{bot_id}"'
        )
        if mode == "inline":
            return (
                f"{inner} data-config='{config_attr}'><div class=\"aipkit_chat_main\"></div></div>"
            )
        return (
            f'<div class="aipkit_popup_wrapper aipkit-popup-standard" id="aipkit_popup_wrapper_'
            f'{bot_id}" data-config=\'{config_attr}\'>{inner} aria-hidden="true" inert>'
            "</div></div>"
        )

    # step 1: the cache POST -------------------------------------------------------------------
    async def _cache(self, request: web.Request, fields: dict[str, str]) -> web.StreamResponse:
        emulator = self.emulator
        emulator.count_post()
        emulator.record(request, fields)
        if emulator.challenged(request):
            return emulator.challenge()
        if limited := emulator.over_rate():
            return limited
        if self._newest and self._cross_origin(request):
            return self._json_error(
                "Embed feature is not available with your current plan.", "embed_not_available", 403
            )
        if not emulator.nonce_valid(fields.get("_ajax_nonce", ""), NONCE_ACTION):
            return self._json_error(
                "Your session has expired or the request is invalid. Please refresh the page and "
                "try again.",
                "nonce_failure_cache_sse",
                403,
            )
        message = fields.get("message", "").replace("\x00", "")
        if not message:
            return self._json_error(
                "Data to cache (message or image) cannot be empty.", "empty_data_to_cache", 400
            )
        key = "aipkit_sse_" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(32))
        if emulator.config.lose_cache_keys > 0:
            emulator.config.lose_cache_keys -= 1  # as if the key had expired or been used
        else:
            self._cache_keys[key] = (message, time.monotonic())
        return emulator.json({"success": True, "data": {"cache_key": key}})

    def _cross_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("origin")
        if not origin:
            return False
        site = urlsplit(str(request.url))
        given = urlsplit(origin)
        return (given.hostname, given.scheme) != (site.hostname, site.scheme)

    def _json_error(self, message: str, code: str, status: int) -> web.Response:
        return self.emulator.json(
            {"success": False, "data": {"message": message, "code": code}}, status
        )

    async def _refresh(self, request: web.Request, fields: dict[str, str]) -> web.StreamResponse:
        """2.4.71's fresh nonce for a page served from a cache; 2.3 has no such action."""
        emulator = self.emulator
        if not self._newest:
            return emulator.unknown_action()
        emulator.stats.refreshes += 1
        if emulator.challenged(request):
            return emulator.challenge()
        response = emulator.json(
            {"success": True, "data": {"nonce": emulator.fresh_nonce(NONCE_ACTION)}}
        )
        response.headers["Cache-Control"] = "no-cache, must-revalidate, max-age=0"
        return response

    # step 2: the answer stream ----------------------------------------------------------------
    async def _stream(self, request: web.Request, fields: dict[str, str]) -> web.StreamResponse:
        emulator, config = self.emulator, self.emulator.config
        emulator.stats.streams += 1
        emulator.record(request, fields, query=True)
        if emulator.challenged(request):
            return emulator.challenge()
        fault = emulator.draw_fault()
        if fault == "error":
            return emulator.server_error()
        if fault == "hang":
            await asyncio.sleep(config.hang_seconds)
        response = await self._open(request)
        if not emulator.nonce_valid(fields.get("_ajax_nonce", ""), NONCE_ACTION):
            return await self._fail(response, self._text("nonce"))
        key = fields.get("cache_key", "")
        if not key:
            return await self._fail(response, "Message cache key is missing.")
        cached = self._cache_keys.pop(key, None)
        if cached is None or time.monotonic() - cached[1] > config.cache_ttl:
            return await self._fail(response, "Message not found in cache.")
        message = cached[0]
        conversation = fields.get("conversation_uuid", "")
        session_id = fields.get("session_id", "")
        if not conversation:
            return await self._fail(response, "Conversation ID is missing.")
        if not session_id:
            return await self._fail(response, "Session ID is missing for guest.")
        if not fields.get("bot_id", "").isdigit() or int(fields["bot_id"]) not in config.bot_ids:
            return await self._fail(response, "Invalid chatbot specified.")
        if emulator.banned(request):
            return await self._fail(response, "Access from your IP address has been blocked.")
        if config.site_error_marker and config.site_error_marker in message:
            return await self._fail(
                response, "Sorry, your message could not be sent as it contains prohibited words."
            )
        emulator.stats.guests[session_id] += 1
        if config.guest_quota and emulator.stats.guests[session_id] > config.guest_quota:
            extra = {}
            if self._newest:
                notice = {"type": "quota_notice", "message": self._text("quota"), "actions": []}
                extra = {"quota_notice": notice}
            return await self._fail(response, self._text("quota"), extra)
        earlier = emulator.stats.conversations.setdefault(conversation, [])
        history = earlier[-HISTORY_TURNS:]
        earlier.append(message)  # logged before the AI is asked: a failed request is a turn too
        return await self._answer(response, message, history, truncate=fault == "truncate")

    async def _answer(
        self, response: web.StreamResponse, message: str, history: list[str], *, truncate: bool
    ) -> web.StreamResponse:
        emulator, config = self.emulator, self.emulator.config
        message_id = f"aipkit-msg-{uuid.uuid4().hex[:14]}.{secrets.randbelow(10**8):08d}"
        await self._event(response, "message_start", {"message_id": message_id})
        if config.ai_rate_limit_marker and config.ai_rate_limit_marker in message:
            return await self._ai_failure(
                response,
                "API Error: Rate limit reached for gpt-4o-mini in organization org-emulator on "
                "requests per min. (Code: rate_limit_exceeded)",
            )
        if config.ai_error_marker and config.ai_error_marker in message:
            return await self._ai_failure(
                response, "API Error: The server had an error while processing your request."
            )
        response_id = f"resp_{uuid.uuid4().hex[:24]}"
        if self._newest:
            for status in ("response.created", "response.in_progress"):
                await self._event(
                    response,
                    "status",
                    {"type": status, "status": "in_progress", "response_id": response_id},
                )
        if config.latency:
            await asyncio.sleep(config.latency)
        if config.captcha_marker and config.captcha_marker in message:
            answer = CAPTCHA_TEXT
        else:
            answer = expected_answer(message, history, config.answer_padding)
            emulator.stats.answers += 1
            emulator.stats.answered[message] += 1
        pieces = [answer[i : i + PIECE] for i in range(0, len(answer), PIECE)]
        for piece in pieces[: len(pieces) // 2] if truncate else pieces:
            await response.write(b"data: " + _json({"delta": piece}) + b"\n\n")
        if truncate:
            await response.write_eof()
            return response
        await self._event(response, "openai_response_id", {"id": response_id})
        await self._event(response, "done", {"finished": True})
        await response.write_eof()
        return response

    async def _open(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache, no-store, must-revalidate, max-age=0, no-transform",
                "Pragma": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self.emulator.stats.status[200] += 1
        if self._newest:
            await response.write(b":" + b" " * 4096 + b"\n\n")
        return response

    async def _event(
        self, response: web.StreamResponse, name: str, data: dict[str, Any], event_id: str = ""
    ) -> None:
        head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id else "")
        await response.write(head.encode() + b"data: " + _json(data) + b"\n\n")

    async def _fail(
        self, response: web.StreamResponse, text: str, extra: dict[str, Any] | None = None
    ) -> web.StreamResponse:
        """A refusal: an `error` event, then `done`."""
        await self._event(response, "error", {"error": text, **(extra or {})}, _error_id())
        await self._event(response, "done", {"finished": True})
        await response.write_eof()
        return response

    async def _ai_failure(self, response: web.StreamResponse, text: str) -> web.StreamResponse:
        """The AI behind the site failed: an `error` event, then the stream just ends."""
        await self._event(response, "error", {"error": text}, _error_id())
        await response.write_eof()
        return response


def _error_id() -> str:
    return f"err-{int(time.time())}"


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()
