"""The legacy chat of AI Power ≤ 2.2 (PROTOCOL.md §A), as the emulator serves it.

The page carries the nonce in the widget's attributes (or another known markup); one POST of
`wpaicg_chat_shortcode_message` asks. The answer streams as the upstream's own chat-completion
chunks ending in `[DONE]` (the plugin's default; `stream=false` gives the JSON reply). An AI that
fails is streamed as if it were the answer, twice, without `[DONE]`; a guest over its limit gets the
token-limit event; a bad nonce gets one of the three replies the plugin's versions gave.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from batchgpt.emulator.site import AJAX_PATH, CAPTCHA_TEXT, expected_answer

if TYPE_CHECKING:
    from batchgpt.emulator.site import Emulator

ACTION = "wpaicg_chat_shortcode_message"
NONCE_ACTION = "wpaicg-chatbox"
PIECE = 9
Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


class LegacyChat:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.actions: dict[str, Handler] = {ACTION: self._chat}
        self._guest_messages: Counter[str] = Counter()

    def markup(self, origin: str) -> str:
        config = self.emulator.config
        nonce = self.emulator.page_nonce(NONCE_ACTION)
        post_id = config.post_id
        ajax = json.dumps(origin + AJAX_PATH).replace("/", "\\/")
        return {
            "data-nonce": (
                '<div class="wpaicg-chat-shortcode"\n     data-user-bg-color="#444654"\n'
                f'     data-nonce="{nonce}"\n     data-post-id="{post_id}"\n'
                f'     data-url="{html.escape(origin)}"\n     data-bot-id="0"\n'
                '     data-type="shortcode"\n></div>'
                f'<script>var wpaicgParams = {{"ajax_url":{ajax},"search_nonce":"{nonce}",'
                '"logged_in":"0"};</script>'
            ),
            "wpaicgParams": (
                f'<script>var wpaicgParams = {{"ajax_url":{ajax},"search_nonce":"{nonce}",'
                f'"logged_in":"0"}};</script><div class="wpaicg-chat-shortcode" data-post-id="'
                f'{post_id}"></div>'
            ),
            "hidden-input": (
                f'<form><input type="hidden" name="_wpnonce" value="{nonce}">'
                f"<input type='hidden' name='post_id' value='{post_id}'></form>"
            ),
            "script-var": (
                f"<script>var wpaicg_nonce = '{nonce}'; var post_id = {post_id};</script>"
            ),
            "none": "<p>The chat is unavailable.</p>",
        }[config.nonce_markup]

    async def _chat(self, request: web.Request, fields: dict[str, str]) -> web.StreamResponse:
        emulator, config = self.emulator, self.emulator.config
        emulator.count_post()
        emulator.record(request, fields)
        if emulator.challenged(request):
            return emulator.challenge()
        if limited := emulator.over_rate():
            return limited
        if config.latency:
            await asyncio.sleep(config.latency)
        fault = emulator.draw_fault()
        if fault == "error":
            return emulator.server_error()
        if fault == "hang":
            await asyncio.sleep(config.hang_seconds)
        if not emulator.nonce_valid(fields.get("_wpnonce", ""), NONCE_ACTION):
            return self._nonce_failure(request)
        message = fields.get("message", "")
        if fault == "truncate":
            body = json.dumps({"status": "success", "data": expected_answer(message)})
            return emulator.reply(
                web.Response(text=body[: len(body) // 2], content_type="application/json")
            )
        if not message.strip():
            return emulator.json({"status": "error", "msg": "Please enter a message."})
        if emulator.banned(request):
            return await self._refusal(
                request, {"msg": "Access from your IP address has been blocked.", "ipBanned": True}
            )
        if config.site_error_marker and config.site_error_marker in message:
            return emulator.json(
                {"status": "error", "msg": "Your message contains prohibited words."}
            )
        client = fields.get("wpaicg_chat_client_id", "")
        if config.guest_quota and self._guest_messages[client] >= config.guest_quota:
            return await self._refusal(
                request, {"msg": "You have reached your token limit.", "tokenLimitReached": True}
            )
        self._guest_messages[client] += 1
        if config.captcha_marker and config.captcha_marker in message:
            return emulator.json({"status": "success", "msg": "", "data": CAPTCHA_TEXT})
        if config.ai_rate_limit_marker and config.ai_rate_limit_marker in message:
            return await self._ai_failure(request, "Rate limit reached for gpt-4o-mini.")
        if config.ai_error_marker and config.ai_error_marker in message:
            return await self._ai_failure(request, "The server had an error.")
        emulator.stats.answers += 1
        emulator.stats.answered[message] += 1
        answer = expected_answer(message, padding=config.answer_padding)
        if config.stream:
            return await self._stream(request, answer)
        return emulator.json(
            {"status": "success", "msg": "Something went wrong", "data": answer, "log": 1}
        )

    def _nonce_failure(self, request: web.Request) -> web.Response:
        kind = self.emulator.config.nonce_failure
        if kind == "json":
            return self.emulator.json({"status": "error", "msg": "Nonce verification failed"})
        if kind == "expired":
            referer = html.escape(request.headers.get("referer", ""))
            return self.emulator.reply(
                web.Response(
                    status=403,
                    text=f'The link you followed has expired.</p><p><a href="{referer}">'
                    "Please try again.</a>",
                    content_type="text/html",
                )
            )
        return self.emulator.reply(web.Response(status=403, text="-1"))

    async def _refusal(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        """A limit or a ban: one event without [DONE] when streaming, else the JSON."""
        if not self.emulator.config.stream:
            return self.emulator.json(payload)
        response = await self._open_stream(request)
        await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        await response.write_eof()
        return response

    async def _ai_failure(self, request: web.Request, text: str) -> web.StreamResponse:
        """The AI behind the site failed: its text streamed as the answer, twice, no [DONE]."""
        if not self.emulator.config.stream:
            return self.emulator.json({"status": "error", "msg": text})
        response = await self._open_stream(request)
        for _ in range(2):
            for word in text.split(" "):
                delta = {"choices": [{"delta": {"content": f" {word}"}}]}
                await response.write(b"event: message\n\n" + _data(delta))
            await response.write(_data({"choices": [{"finish_reason": "stop"}]}))
        await response.write_eof()
        return response

    async def _open_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream;charset=UTF-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self.emulator.stats.status[200] += 1
        return response

    async def _stream(self, request: web.Request, answer: str) -> web.StreamResponse:
        """The upstream's chunks, relayed as the plugin relays them, then [DONE]."""
        response = await self._open_stream(request)
        base = {
            "id": f"chatcmpl-{abs(hash(answer)) % 10**12:012d}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "gpt-4o-mini",
            "system_fingerprint": "fp_emulator",
        }
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
        deltas += [{"content": answer[i : i + PIECE]} for i in range(0, len(answer), PIECE)]
        for delta in deltas:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            await response.write(_data({**base, "choices": [choice]}))
        last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
        await response.write(_data({**base, "choices": [last]}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"
