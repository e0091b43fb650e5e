"""A local chatgpt.es: a WordPress page with the AI Power chat plugin, in either chat generation.

`chat=aipkit` (the default, what sites run today) is plugin 2.3 or 2.4.71's AIPKit chat
(aipkit.py); `chat=legacy` is the chat of plugin ≤ 2.2 (legacy.py). What both share lives here:
the page (with a decoy nonce of another plugin before or after the chat), WordPress nonces (the
same for every anonymous visitor within a tick, as the plugin's are), a Cloudflare-ish cookie and
challenge, the faults a real site shows (429 with Retry-After, 5xx, hangs, cut answers, latency,
a site that is down), chatgpt.es's consent gate, counters of everything it saw, and control
endpoints under `/__emulator__/` to change settings and read counters from another process.
Answers are deterministic (`expected_answer`), so tests compare results against them.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web

from batchgpt.emulator.control import CONTROL_PREFIX, Controlled, update_settings
from batchgpt.emulator.server import app_runner, serve_until_stopped, serving_in_thread

AJAX_PATH = "/wp-admin/admin-ajax.php"
CAPTCHA_TEXT = "Du musst das Kästchen anklicken! Bitte bestätige, dass du kein Roboter bist."
NONCE_MARKUPS = ("data-nonce", "wpaicgParams", "hidden-input", "script-var", "none")
NONCE_FAILURES = ("-1", "expired", "json")
CHATS = ("legacy", "aipkit")
PLUGINS = ("2.3", "2.4.71")
DECOYS = ("before", "after", "none")
COOKIE = "__cf_bm"
#: A nonce of another plugin on the same page: a loose `nonce` pattern would pick it up.
DECOY_SCRIPT = '<script>var other = {"nonce":"0000000000"};</script>'


def expected_answer(message: str, earlier: Sequence[str] = (), padding: int = 0) -> str:
    """The answer the emulator gives to `message`, in a conversation whose earlier user messages
    were `earlier` (the AIPKit chat keeps conversations: a reused one changes the answer), made
    `padding` characters longer (`answer_padding`, for answers of any size)."""
    digest = hashlib.sha256("\x1e".join([*earlier, message]).encode()).hexdigest()[:12]
    tail = message[-60:].replace("\n", " ")
    turn = f" (turn {len(earlier) + 1})" if earlier else ""
    return f"Emulated answer {digest}: you said «{tail}»{turn}" + "·" * padding


@dataclass
class EmulatorConfig:
    """Everything a test can turn; rates are fractions of chat requests, times are seconds."""

    chat: str = "aipkit"
    plugin: str = "2.4.71"
    bots: str = "4"
    bot_mode: str = ""
    post_id: str = "106"
    nonce_markup: str = "data-nonce"
    decoys: str = "after"
    nonce_life: float = 86400.0
    nonce_failure: str = "expired"
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
    stream: bool = True
    down: bool = False
    guest_quota: int = 0
    cache_ttl: float = 60.0
    lose_cache_keys: int = 0
    banned_via: str = ""
    answer_padding: int = 0
    captcha_marker: str = "[captcha]"
    site_error_marker: str = "[site-error]"
    ai_rate_limit_marker: str = "[ai-429]"
    ai_error_marker: str = "[ai-500]"
    seed: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        update_settings(self, changes)
        for key, allowed in (("chat", CHATS), ("plugin", PLUGINS), ("decoys", DECOYS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}")

    @property
    def bot_ids(self) -> list[int]:
        return [int(part) for part in self.bots.split(",") if part.strip()]


@dataclass
class EmulatorStats:
    """What the emulator saw. `posts` are chat requests: the legacy POST or AIPKit's cache POST
    (`post_times` when each arrived); `streams` are AIPKit's answer GETs."""

    gets: int = 0
    posts: int = 0
    streams: int = 0
    refreshes: int = 0
    answers: int = 0
    nonce_failures: int = 0
    challenges: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    status: Counter[int] = field(default_factory=Counter)
    post_times: list[float] = field(default_factory=list)
    answered: Counter[str] = field(default_factory=Counter)
    #: AIPKit: user messages by conversation_uuid, in order; requests by guest session_id.
    conversations: dict[str, list[str]] = field(default_factory=dict)
    guests: Counter[str] = field(default_factory=Counter)
    forms: list[dict[str, str]] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Every page and admin-ajax request the chat made."""
        return self.gets + self.posts + self.streams + self.refreshes

    def snapshot(self) -> dict[str, Any]:
        return {
            "gets": self.gets,
            "posts": self.posts,
            "streams": self.streams,
            "refreshes": self.refreshes,
            "answers": self.answers,
            "nonce_failures": self.nonce_failures,
            "challenges": self.challenges,
            "max_in_flight": self.max_in_flight,
            "status": {str(k): v for k, v in self.status.items()},
            "post_times": list(self.post_times),
            "guests": dict(self.guests),
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


class Emulator(Controlled):
    """The emulated site; `app` is an aiohttp application."""

    config: EmulatorConfig
    stats: EmulatorStats

    def __init__(self, config: EmulatorConfig | None = None, *, keep_forms: bool = False) -> None:
        from batchgpt.emulator.aipkit import AipkitChat
        from batchgpt.emulator.legacy import LegacyChat

        self.config = config or EmulatorConfig()
        self.stats = EmulatorStats()
        self.keep_forms = keep_forms
        self._secret = secrets.token_bytes(16)
        self._old_secret = secrets.token_bytes(16)
        self._burned: set[str] = set()
        self._random = random.Random(self.config.seed)
        self._recent: list[float] = []
        self.legacy = LegacyChat(self)
        self.aipkit = AipkitChat(self)
        self.app = web.Application()
        self.add_control_routes(self.app)
        self.app.router.add_post(CONTROL_PREFIX + "rotate", self._rotate)
        self.app.router.add_post(AJAX_PATH, self._ajax_post)
        self.app.router.add_get(AJAX_PATH, self._ajax_get)
        self.app.router.add_get("/{path:.*}", self._page)

    def rotate_nonces(self) -> None:
        """Invalidate every nonce handed out so far (a new WordPress salt)."""
        self._old_secret, self._secret = self._secret, secrets.token_bytes(16)

    def reset_stats(self) -> None:
        self.stats = EmulatorStats()

    # nonces: WordPress's, for a visitor who is not logged in ----------------------------------
    def _tick(self) -> int:
        return int(time.time() // (self.config.nonce_life / 2)) + 1

    def _nonce(self, action: str, tick: int, secret: bytes) -> str:
        text = f"{tick}|{action}|0|".encode()
        return hmac.new(secret, text, hashlib.md5).hexdigest()[-12:-2]

    def page_nonce(self, action: str) -> str:
        """The nonce the page prints (from a page cache's old salt when `stale_page_nonce`)."""
        secret = self._old_secret if self.config.stale_page_nonce else self._secret
        return self._nonce(action, self._tick(), secret)

    def fresh_nonce(self, action: str) -> str:
        return self._nonce(action, self._tick(), self._secret)

    def nonce_valid(self, nonce: str, action: str) -> bool:
        tick = self._tick()
        valid = any(
            hmac.compare_digest(nonce, self._nonce(action, t, self._secret))
            for t in (tick, tick - 1)
        )
        if not valid:
            self.stats.nonce_failures += 1
        return valid

    # what every request meets -----------------------------------------------------------------
    def _cookie(self, request: web.Request) -> str:
        return request.cookies.get(COOKIE, "")

    def _is_browser(self, request: web.Request) -> bool:
        agent = request.headers.get("user-agent", "")
        return "Chrome/" in agent and "sec-ch-ua" in request.headers

    def challenged(self, request: web.Request) -> bool:
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

    def challenge(self) -> web.Response:
        self.stats.challenges += 1
        body = (
            "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
            '<div id="cf-spinner-please-wait">Checking your browser…</div></body></html>'
        )
        return self.reply(
            web.Response(
                status=403,
                text=body,
                content_type="text/html",
                headers={"cf-mitigated": "challenge", "server": "cloudflare"},
            )
        )

    def reply(self, response: web.Response) -> web.Response:
        self.stats.status[response.status] += 1
        return response

    def json(self, payload: dict[str, Any], status: int = 200) -> web.Response:
        return self.reply(web.json_response(payload, status=status))

    async def open_stream(
        self, request: web.Request, headers: dict[str, str]
    ) -> web.StreamResponse:
        """A 200 event stream, its headers sent, for a chat generation to write its events on."""
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        self.stats.status[200] += 1
        return response

    def unknown_action(self) -> web.Response:
        """admin-ajax's answer to an action nobody registered."""
        return self.reply(web.Response(status=400, text="0", content_type="text/html"))

    def down(self) -> web.Response:
        return self.reply(web.Response(status=503, text="Service Unavailable"))

    def banned(self, request: web.Request) -> bool:
        """Whether the request's IP is banned: one that came through a proxy whose `Via` header
        contains `banned_via`, or every one for `*`."""
        via = self.config.banned_via
        return via == "*" or (bool(via) and via in request.headers.get("via", ""))

    def over_rate(self) -> web.Response | None:
        """429 with Retry-After once more than `rate_limit` chat requests came in a second."""
        if not self.config.rate_limit:
            return None
        now = time.monotonic()
        self._recent = [t for t in self._recent if now - t < 1.0]
        if len(self._recent) < self.config.rate_limit:
            self._recent.append(now)
            return None
        value = self.config.retry_after
        if value == "date":
            value = formatdate(time.time() + 2, usegmt=True)
        return self.reply(
            web.Response(status=429, text="Too Many Requests", headers={"Retry-After": value})
        )

    def draw_fault(self) -> str | None:
        """'error', 'hang', 'truncate' or None, by the configured rates (one draw each)."""
        fault = self._random.random()
        config = self.config
        for name, rate in (
            ("error", config.error_rate),
            ("hang", config.hang_rate),
            ("truncate", config.truncate_rate),
        ):
            if fault < rate:
                return name
            fault -= rate
        return None

    def server_error(self) -> web.Response:
        status = self._random.choice((500, 502, 503, 520))
        return self.reply(web.Response(status=status, text=f"<h1>Error {status}</h1>"))

    def record(self, request: web.Request, fields: dict[str, str], *, query: bool = False) -> None:
        if self.keep_forms:
            (self.stats.queries if query else self.stats.forms).append(fields)
            self.stats.headers.append({k.lower(): v for k, v in request.headers.items()})

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            yield
        finally:
            self.stats.in_flight -= 1

    def count_post(self) -> None:
        self.stats.posts += 1
        self.stats.post_times.append(time.monotonic())

    # routes -----------------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        self.stats.gets += 1
        if self.config.down:
            return self.down()
        if self.challenged(request):
            return self.challenge()
        cookie = self._cookie(request) or secrets.token_urlsafe(24)
        origin = str(request.url.origin())
        chat = self.aipkit if self.config.chat == "aipkit" else self.legacy
        response = web.Response(text=self._page_html(chat.markup(origin)), content_type="text/html")
        response.set_cookie(COOKIE, cookie, httponly=True, path="/")
        return self.reply(response)

    def _page_html(self, chat: str) -> str:
        decoys = self.config.decoys
        return (
            "<!DOCTYPE html><html lang='es'><head><title>ChatGPT en Español</title>"
            f"{DECOY_SCRIPT if decoys == 'before' else ''}</head><body>"
            f"<h1>ChatGPT Español</h1>{chat}"
            f"{DECOY_SCRIPT if decoys == 'after' else ''}</body></html>"
        )

    async def _ajax_post(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        fields = {key: str(value) for key, value in form.items()}
        if self.config.down:
            self.record(request, fields)
            return self.down()
        handler = (
            self.legacy.actions.get(fields.get("action", ""))
            if (self.config.chat == "legacy")
            else self.aipkit.actions.get(fields.get("action", ""))
        )
        if handler is None:
            self.record(request, fields)
            return self.unknown_action()
        with self.in_flight():
            return await handler(request, fields)

    async def _ajax_get(self, request: web.Request) -> web.StreamResponse:
        fields = dict(request.query)
        if self.config.down:
            return self.down()
        handler = (
            self.aipkit.get_actions.get(fields.get("action", ""))
            if (self.config.chat == "aipkit")
            else None
        )
        if handler is None:
            return self.unknown_action()
        with self.in_flight():
            return await handler(request, fields)

    # control ----------------------------------------------------------------------------------
    async def _rotate(self, request: web.Request) -> web.Response:
        self.rotate_nonces()
        return web.json_response({"rotated": True})


@contextmanager
def running_emulator(
    config: EmulatorConfig | None = None, *, keep_forms: bool = False
) -> Iterator[tuple[Emulator, str]]:
    """Serve an emulator from a background thread on a free loopback port; yield it and its URL."""
    emulator = Emulator(config, keep_forms=keep_forms)
    with serving_in_thread(lambda: app_runner(emulator.app), "emulator") as port:
        yield emulator, f"http://127.0.0.1:{port}"


def describe(config: EmulatorConfig) -> str:
    """What the emulator serves, in a few words."""
    if config.chat == "legacy":
        return "the legacy chat (AI Power ≤ 2.2)"
    return f"the AIPKit chat (AI Power {config.plugin})"


def serve_forever(host: str, port: int, settings: dict[str, str]) -> None:
    """Serve until SIGINT or SIGTERM (the `batchgpt emulator` command)."""
    config = EmulatorConfig()
    config.update(settings)
    serve_until_stopped(
        Emulator(config).app,
        host,
        port,
        lambda bound: f"chatgpt.es emulator on http://{host}:{bound}, speaking {describe(config)}",
    )
