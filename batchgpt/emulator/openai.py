"""A local OpenAI-compatible chat API, `POST /v1/chat/completions`, for tests and benchmarks.

Every answer is derived from the messages (`expected_chat_answer`) and carries `usage`
(`count_tokens` of the text in and out), so tests can check results exactly. Fault modes, each as
the real servers answer: latency, 429 with Retry-After and x-ratelimit-reset-* headers (the first
N requests, or past a rate), a spent quota, 5xx, 401 (or 403) for a wrong key, 404 for an unknown
model, 400 with the API's message, hangs, connection resets, truncated JSON, oversized answers.
It counts what it received, full request bodies included, and serves `/__emulator__/stats` and
`/__emulator__/config` like the chatgpt.es emulator, so a benchmark can run it in another process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from batchgpt.emulator.control import Controlled, update_settings
from batchgpt.emulator.server import app_runner, serve_until_stopped, serving_in_thread

API_PREFIX = "/v1"
CHAT_PATH = API_PREFIX + "/chat/completions"
MODELS_PATH = API_PREFIX + "/models"
BAD_REQUEST_MESSAGE = "Invalid value for 'temperature': expected a number between 0 and 2."


def count_tokens(text: str) -> int:
    """The emulator's token count: one per 4 characters, at least one."""
    return max(1, len(text) // 4)


def chat_text(messages: list[dict[str, Any]]) -> str:
    """The text of a conversation, as the answer and the usage are computed from it."""
    parts = []
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"{message.get('role')}: {content}")
    return "\n".join(parts)


def expected_chat_answer(messages: list[dict[str, Any]]) -> str:
    """The answer the emulator gives to `messages` (before any max_tokens cut)."""
    text = chat_text(messages)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    tail = text[-60:].replace("\n", " ")
    return f"Emulated chat answer {digest}: you said «{tail}»"


@dataclass
class OpenAIEmulatorConfig:
    """Everything a test can turn; rates are fractions of requests, times are seconds."""

    #: The key every request must bear ("": any key, or none), and the status of a wrong one.
    api_key: str = ""
    auth_status: int = 401
    #: The models served, comma-separated ("": any name).
    models: str = ""
    latency: float = 0.0
    #: The first N requests get 429.
    rate_limited_first: int = 0
    #: More requests than this in a second get 429 (0: no limit).
    rate_limit: float = 0.0
    #: Headers of a 429 ("": not sent).
    retry_after: str = "1"
    reset_requests: str = ""
    reset_tokens: str = ""
    #: Every request gets OpenAI's 429 `insufficient_quota`.
    quota_exhausted: bool = False
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    truncate_rate: float = 0.0
    #: Close the connection without an answer.
    reset_rate: float = 0.0
    #: Pad every answer to at least this many characters (0: no padding).
    answer_chars: int = 0
    #: Completion tokens added to every answer's usage (a server that counts more than it shows).
    extra_completion_tokens: int = 0
    #: A last user message containing this gets 400 with BAD_REQUEST_MESSAGE.
    bad_request_marker: str = "[bad-request]"
    seed: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        update_settings(self, changes)


@dataclass
class OpenAIEmulatorStats:
    """What the emulator saw."""

    requests: int = 0
    answers: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    status: Counter[int] = field(default_factory=Counter)
    request_times: list[float] = field(default_factory=list)
    #: Tokens each answer's usage reported, with the time its request arrived.
    tokens: list[tuple[float, int]] = field(default_factory=list)
    answered: Counter[str] = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "answers": self.answers,
            "max_in_flight": self.max_in_flight,
            "status": {str(k): v for k, v in self.status.items()},
            "request_times": list(self.request_times),
            "total_tokens": sum(tokens for _, tokens in self.tokens),
        }


def _error(status: int, message: str, kind: str, code: str | None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


class OpenAIEmulator(Controlled):
    """The emulated API; `app` is an aiohttp application."""

    config: OpenAIEmulatorConfig
    stats: OpenAIEmulatorStats

    def __init__(
        self, config: OpenAIEmulatorConfig | None = None, *, keep_bodies: bool = False
    ) -> None:
        self.config = config or OpenAIEmulatorConfig()
        self.stats = OpenAIEmulatorStats()
        self.keep_bodies = keep_bodies
        self._random = random.Random(self.config.seed)
        self._recent: list[float] = []
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_control_routes(self.app)
        self.app.router.add_post(CHAT_PATH, self._chat)
        self.app.router.add_get(MODELS_PATH, self._models)
        self.app.router.add_route("*", "/{path:.*}", self._unknown)

    def reset_stats(self) -> None:
        self.stats = OpenAIEmulatorStats()

    def _reply(self, response: web.Response) -> web.Response:
        self.stats.status[response.status] += 1
        return response

    async def _unknown(self, request: web.Request) -> web.Response:
        return self._reply(
            _error(
                404,
                f"Unknown request URL: {request.method} {request.path}.",
                "invalid_request_error",
                "unknown_url",
            )
        )

    def _refused(self, authorization: str | None) -> web.Response | None:
        """The answer to a request without the configured key; None when it may pass."""
        key = self.config.api_key
        if not key or authorization == f"Bearer {key}":
            return None
        given = (authorization or "").removeprefix("Bearer ")
        return self._reply(
            _error(
                self.config.auth_status,
                f"Incorrect API key provided: {given or '(none)'}.",
                "invalid_request_error",
                "invalid_api_key",
            )
        )

    async def _models(self, request: web.Request) -> web.Response:
        if refused := self._refused(request.headers.get("Authorization")):
            return refused
        names = [m for m in self.config.models.split(",") if m] or ["emulated-model"]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "emulator"} for n in names]
        return self._reply(web.json_response({"object": "list", "data": data}))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        arrived = time.monotonic()
        stats.request_times.append(arrived)
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            return await self._answer(request, arrived)
        finally:
            stats.in_flight -= 1

    async def _answer(self, request: web.Request, arrived: float) -> web.StreamResponse:
        config = self.config
        raw = await request.read()
        authorization = request.headers.get("Authorization")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if self.keep_bodies:
            self.stats.bodies.append(body if isinstance(body, dict) else {"<raw>": raw.decode()})
            self.stats.authorizations.append(authorization)
        if refused := self._refused(authorization):
            return refused
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._reply(
                _error(
                    400,
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                    None,
                )
            )
        model = body.get("model")
        known = [m for m in config.models.split(",") if m]
        if not isinstance(model, str) or (known and model not in known):
            return self._reply(
                _error(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                )
            )
        if config.quota_exhausted:
            return self._reply(
                _error(
                    429,
                    "You exceeded your current quota, please check your plan and billing details.",
                    "insufficient_quota",
                    "insufficient_quota",
                )
            )
        if self.stats.requests <= config.rate_limited_first or (
            config.rate_limit and self._over_rate()
        ):
            return self._rate_limited()
        if config.latency:
            await asyncio.sleep(config.latency)
        fault = self._random.random()
        if fault < config.error_rate:
            status = self._random.choice((500, 502, 503))
            return self._reply(web.Response(status=status, text=f"<h1>Error {status}</h1>"))
        fault -= config.error_rate
        if fault < config.hang_rate:
            await asyncio.sleep(config.hang_seconds)
        fault -= config.hang_rate
        if fault < config.reset_rate:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        fault -= config.reset_rate
        messages = body["messages"]
        last = chat_text(messages[-1:])
        if config.bad_request_marker and config.bad_request_marker in last:
            return self._reply(
                _error(400, BAD_REQUEST_MESSAGE, "invalid_request_error", "invalid_value")
            )
        completion = self._completion(body, model, messages)
        payload = json.dumps(completion).encode()
        if fault < config.truncate_rate:
            return self._reply(
                web.Response(body=payload[: len(payload) // 2], content_type="application/json")
            )
        self.stats.answers += 1
        self.stats.answered[chat_text(messages)] += 1
        self.stats.tokens.append((arrived, completion["usage"]["total_tokens"]))
        return self._reply(web.Response(body=payload, content_type="application/json"))

    def _completion(
        self, body: dict[str, Any], model: str, messages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        answer = expected_chat_answer(messages)
        if self.config.answer_chars > len(answer):
            answer += " " + "x" * (self.config.answer_chars - len(answer) - 1)
        finish = "stop"
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and count_tokens(answer) > limit:
            answer, finish = answer[: max(limit, 0) * 4], "length"
        prompt_tokens = count_tokens(chat_text(messages))
        completion_tokens = count_tokens(answer) + self.config.extra_completion_tokens
        return {
            "id": f"chatcmpl-emu{self._random.getrandbits(64):016x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_emulator",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _over_rate(self) -> bool:
        now = time.monotonic()
        self._recent = [t for t in self._recent if now - t < 1.0]
        if len(self._recent) >= self.config.rate_limit:
            return True
        self._recent.append(now)
        return False

    def _rate_limited(self) -> web.Response:
        config = self.config
        response = _error(
            429,
            "Rate limit reached for requests. Please try again later.",
            "requests",
            "rate_limit_exceeded",
        )
        for header, value in (
            ("Retry-After", config.retry_after),
            ("x-ratelimit-reset-requests", config.reset_requests),
            ("x-ratelimit-reset-tokens", config.reset_tokens),
        ):
            if value:
                response.headers[header] = value
        return self._reply(response)

    # control ----------------------------------------------------------------------------------


@contextmanager
def running_openai_emulator(
    config: OpenAIEmulatorConfig | None = None, *, keep_bodies: bool = False
) -> Iterator[tuple[OpenAIEmulator, str]]:
    """Serve an emulator from a background thread on a free loopback port; yield it and its
    API root (`http://127.0.0.1:PORT/v1`, what `--base-url` takes)."""
    emulator = OpenAIEmulator(config, keep_bodies=keep_bodies)
    with serving_in_thread(lambda: app_runner(emulator.app), "openai-emulator") as port:
        yield emulator, f"http://127.0.0.1:{port}{API_PREFIX}"


def serve_openai_forever(host: str, port: int, settings: dict[str, str]) -> None:
    """Serve until SIGINT or SIGTERM (`batchgpt emulator --api openai`)."""
    config = OpenAIEmulatorConfig()
    config.update(settings)
    serve_until_stopped(
        OpenAIEmulator(config).app,
        host,
        port,
        lambda bound: f"OpenAI-compatible emulator on http://{host}:{bound}{API_PREFIX}",
    )
