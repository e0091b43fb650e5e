"""A local chatgpt.es: the AI Power chat plugin's wire protocol as PROTOCOL.md describes it.

It serves the page with a WordPress-style nonce (in any of the known markups), sets a Cloudflare-ish
cookie, checks nonces per cookie and tick, and answers admin-ajax.php with a deterministic answer
derived from the message, or with any failure the real site produces: 403 "-1" and its siblings,
400 "0", Cloudflare challenges, the captcha text, 429 with Retry-After, 5xx, hangs, truncated JSON.
It counts everything it saw so tests and benchmarks can assert on the traffic. Control endpoints
under `/__emulator__/` change the configuration and read the counters from another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import html
import json
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web

AJAX_PATH = "/wp-admin/admin-ajax.php"
CONTROL_PREFIX = "/__emulator__/"
CAPTCHA_TEXT = "Du musst das Kästchen anklicken! Bitte bestätige, dass du kein Roboter bist."
NONCE_MARKUPS = ("data-nonce", "wpaicgParams", "hidden-input", "script-var", "none")
NONCE_FAILURES = ("-1", "expired", "json")
COOKIE = "__cf_bm"


def expected_answer(message: str) -> str:
    """The answer the emulator gives to `message`; tests compare results against it."""
    digest = hashlib.sha256(message.encode()).hexdigest()[:12]
    tail = message[-60:].replace("\n", " ")
    return f"Emulated answer {digest}: you said «{tail}»"


@dataclass
class EmulatorConfig:
    """Everything a test can turn; rates are fractions of POSTs, times are seconds."""

    nonce_markup: str = "data-nonce"
    post_id: str = "106"
    nonce_life: float = 86400.0
    nonce_failure: str = "-1"
    stale_page_nonce: bool = False
    require_browser: bool = True
    challenge_rate: float = 0.0
    rate_limit: float = 0.0
    retry_after: str = "1"
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    truncate_rate: float = 0.0
    latency: float = 0.0
    stream: bool = False
    down: bool = False
    captcha_marker: str = "[captcha]"
    site_error_marker: str = "[site-error]"
    seed: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name: f for f in dataclasses.fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise KeyError(f"unknown emulator setting {key!r}")
            kind = type(getattr(self, key))
            setattr(self, key, kind(value) if kind is not bool else _as_bool(value))


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass
class EmulatorStats:
    """What the emulator saw."""

    gets: int = 0
    posts: int = 0
    answers: int = 0
    nonce_failures: int = 0
    challenges: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    status: Counter[int] = field(default_factory=Counter)
    post_times: list[float] = field(default_factory=list)
    answered: Counter[str] = field(default_factory=Counter)
    forms: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return {
            "gets": self.gets,
            "posts": self.posts,
            "answers": self.answers,
            "nonce_failures": self.nonce_failures,
            "challenges": self.challenges,
            "max_in_flight": self.max_in_flight,
            "status": {str(k): v for k, v in self.status.items()},
            "post_times": list(self.post_times),
        }


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events any half-open window of `window` seconds holds."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class Emulator:
    """The emulated site; `app` is an aiohttp application."""

    def __init__(self, config: EmulatorConfig | None = None, *, keep_forms: bool = False) -> None:
        self.config = config or EmulatorConfig()
        self.stats = EmulatorStats()
        self.keep_forms = keep_forms
        self._secret = secrets.token_bytes(16)
        self._old_secret = secrets.token_bytes(16)
        self._burned: set[str] = set()
        self._random = random.Random(self.config.seed)
        self._recent: list[float] = []
        self.app = web.Application()
        self.app.router.add_get(CONTROL_PREFIX + "stats", self._get_stats)
        self.app.router.add_post(CONTROL_PREFIX + "config", self._set_config)
        self.app.router.add_post(CONTROL_PREFIX + "rotate", self._rotate)
        self.app.router.add_post(AJAX_PATH, self._ajax)
        self.app.router.add_get("/{path:.*}", self._page)

    def rotate_nonces(self) -> None:
        """Invalidate every nonce handed out so far (a new WordPress salt)."""
        self._old_secret, self._secret = self._secret, secrets.token_bytes(16)

    def reset_stats(self) -> None:
        self.stats = EmulatorStats()

    # nonces -----------------------------------------------------------------------------------
    def _tick(self) -> int:
        return int(time.time() // (self.config.nonce_life / 2)) + 1

    def _nonce(self, cookie: str, tick: int, secret: bytes) -> str:
        text = f"{tick}|wpaicg-chatbox|0|{cookie}".encode()
        return hmac.new(secret, text, hashlib.md5).hexdigest()[-12:-2]

    def _nonce_valid(self, nonce: str, cookie: str) -> bool:
        tick = self._tick()
        return any(
            hmac.compare_digest(nonce, self._nonce(cookie, t, self._secret))
            for t in (tick, tick - 1)
        )

    # requests ---------------------------------------------------------------------------------
    def _cookie(self, request: web.Request) -> str:
        return request.cookies.get(COOKIE, "")

    def _is_browser(self, request: web.Request) -> bool:
        agent = request.headers.get("user-agent", "")
        return "Chrome/" in agent and "sec-ch-ua" in request.headers

    def _challenged(self, request: web.Request) -> bool:
        cookie = self._cookie(request)
        if self.config.require_browser and not self._is_browser(request):
            return True
        if cookie and cookie in self._burned:
            return True
        if self.config.challenge_rate and self._random.random() < self.config.challenge_rate:
            if cookie:
                self._burned.add(cookie)
            return True
        return False

    def _challenge(self) -> web.Response:
        self.stats.challenges += 1
        body = (
            "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
            '<div id="cf-spinner-please-wait">Checking your browser…</div></body></html>'
        )
        return self._reply(
            web.Response(
                status=403,
                text=body,
                content_type="text/html",
                headers={"cf-mitigated": "challenge", "server": "cloudflare"},
            )
        )

    def _reply(self, response: web.Response) -> web.Response:
        self.stats.status[response.status] += 1
        return response

    async def _page(self, request: web.Request) -> web.Response:
        self.stats.gets += 1
        if self.config.down:
            return self._reply(web.Response(status=503, text="Service Unavailable"))
        if self._challenged(request):
            return self._challenge()
        cookie = self._cookie(request) or secrets.token_urlsafe(24)
        secret = self._old_secret if self.config.stale_page_nonce else self._secret
        nonce = self._nonce(cookie, self._tick(), secret)
        response = web.Response(
            text=self._page_html(nonce, str(request.url.origin())), content_type="text/html"
        )
        response.set_cookie(COOKIE, cookie, httponly=True, path="/")
        return self._reply(response)

    def _page_html(self, nonce: str, origin: str) -> str:
        post_id = self.config.post_id
        markup = self.config.nonce_markup
        ajax = json.dumps(origin + AJAX_PATH)
        chat = {
            "data-nonce": (
                f'<div class="wpaicg-chat-shortcode" data-user-bg-color="#444654" '
                f'data-nonce="{nonce}" data-post-id="{post_id}" '
                f'data-url="{html.escape(origin)}" data-bot-id="0" data-type="shortcode"></div>'
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
        }[markup]
        return (
            "<!DOCTYPE html><html lang='es'><head><title>ChatGPT en Español</title>"
            '<script>var other = {"nonce":"0000000000"};</script></head><body>'
            f"<h1>ChatGPT Español</h1>{chat}</body></html>"
        )

    async def _ajax(self, request: web.Request) -> web.StreamResponse:
        self.stats.posts += 1
        self.stats.post_times.append(time.monotonic())
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.stats.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        form = await request.post()
        fields = {key: str(value) for key, value in form.items()}
        if self.keep_forms:
            self.stats.forms.append(fields)
            self.stats.headers.append({k.lower(): v for k, v in request.headers.items()})
        if config.down:
            return self._reply(web.Response(status=503, text="Service Unavailable"))
        if fields.get("action") != "wpaicg_chat_shortcode_message":
            return self._reply(web.Response(status=400, text="0"))
        if self._challenged(request):
            return self._challenge()
        if config.rate_limit and self._over_rate():
            return self._reply(
                web.Response(status=429, text="Too Many Requests", headers=self._retry_after())
            )
        if config.latency:
            await asyncio.sleep(config.latency)
        fault = self._random.random()
        if fault < config.error_rate:
            status = self._random.choice((500, 502, 503, 520))
            return self._reply(web.Response(status=status, text=f"<h1>Error {status}</h1>"))
        fault -= config.error_rate
        if fault < config.hang_rate:
            await asyncio.sleep(config.hang_seconds)
        fault -= config.hang_rate
        if not self._nonce_valid(fields.get("_wpnonce", ""), self._cookie(request)):
            return self._nonce_failure()
        message = fields.get("message", "")
        if fault < config.truncate_rate:
            body = json.dumps({"status": "success", "data": expected_answer(message)})
            return self._reply(
                web.Response(text=body[: len(body) // 2], content_type="application/json")
            )
        if not message.strip():
            return self._json({"status": "error", "msg": "Please enter a message."})
        if config.captcha_marker and config.captcha_marker in message:
            return self._json({"status": "success", "msg": "", "data": CAPTCHA_TEXT})
        if config.site_error_marker and config.site_error_marker in message:
            return self._json({"status": "error", "msg": "Your message contains prohibited words."})
        self.stats.answers += 1
        answer = expected_answer(message)
        self.stats.answered[message] += 1
        if config.stream:
            return await self._stream(request, answer)
        return self._json(
            {"status": "success", "msg": "Something went wrong", "data": answer, "log": 1}
        )

    def _over_rate(self) -> bool:
        now = time.monotonic()
        self._recent = [t for t in self._recent if now - t < 1.0]
        if len(self._recent) >= self.config.rate_limit:
            return True
        self._recent.append(now)
        return False

    def _retry_after(self) -> dict[str, str]:
        value = self.config.retry_after
        if value == "date":
            value = formatdate(time.time() + 2, usegmt=True)
        return {"Retry-After": value}

    def _nonce_failure(self) -> web.Response:
        self.stats.nonce_failures += 1
        kind = self.config.nonce_failure
        if kind == "json":
            return self._json({"status": "error", "msg": "Nonce verification failed"})
        if kind == "expired":
            return self._reply(
                web.Response(
                    status=403,
                    text="The link you followed has expired. Please try again.",
                    content_type="text/html",
                )
            )
        return self._reply(web.Response(status=403, text="-1"))

    def _json(self, payload: dict[str, Any]) -> web.Response:
        return self._reply(web.json_response(payload))

    async def _stream(self, request: web.Request, answer: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(answer), 16):
            delta = {"choices": [{"delta": {"content": answer[start : start + 16]}}]}
            await response.write(b"data: " + json.dumps(delta).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.stats.status[200] += 1
        return response

    # control ----------------------------------------------------------------------------------
    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.snapshot())

    async def _set_config(self, request: web.Request) -> web.Response:
        changes = await request.json()
        if changes.pop("reset_stats", False):
            self.reset_stats()
        try:
            self.config.update(changes)
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self._random = random.Random(self.config.seed)
        return web.json_response(dataclasses.asdict(self.config))

    async def _rotate(self, request: web.Request) -> web.Response:
        self.rotate_nonces()
        return web.json_response({"rotated": True})


async def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Start serving; the bound port is in `bound_port(runner)`."""
    runner = web.AppRunner(emulator.app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]


@contextmanager
def running_emulator(
    config: EmulatorConfig | None = None, *, keep_forms: bool = False
) -> Iterator[tuple[Emulator, str]]:
    """Serve an emulator from a background thread on a free loopback port; yield it and its URL."""
    emulator = Emulator(config, keep_forms=keep_forms)
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        started["runner"] = loop.run_until_complete(serve(emulator))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="emulator", daemon=True)
    thread.start()
    ready.wait(10)
    runner: web.AppRunner = started["runner"]
    try:
        yield emulator, f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def serve_forever(host: str, port: int, settings: dict[str, str]) -> None:
    """Serve until interrupted (the `batchgpt emulator` command)."""
    config = EmulatorConfig()
    config.update(settings)
    emulator = Emulator(config)

    async def main() -> None:
        runner = await serve(emulator, host, port)
        print(f"chatgpt.es emulator on http://{host}:{bound_port(runner)}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
