"""The `openai` backend: any OpenAI-compatible `POST {base_url}/chat/completions`.

OpenAI itself, vLLM, a llama.cpp server, Ollama, gpt4free's API server. Messages go as given, the
model is free text, and the other fields of an OpenAI batch line's body (temperature, max_tokens,
response_format, seed, ...) are passed through. The key (BATCHGPT_API_KEY or OPENAI_API_KEY, never
a flag) goes as a bearer token and is cut out of everything the server sends back, so no message,
log or output line can carry it. Errors are read the way these servers speak (`answer_from`), and
`--tpm` is one token budget (`TokenBudget`) shared by every client of the run; `--rate` stays the
request pacer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from batchgpt.config import Integer, Option, RunConfig, Text
from batchgpt.errors import (
    AuthError,
    BadRequestError,
    BadResponseError,
    NotFoundError,
    ProviderError,
    QuotaError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    quote_body,
)
from batchgpt.formats import token_counts
from batchgpt.providers.base import Answer, Backend, Messages
from batchgpt.providers.http import (
    DEFAULT_MAX_ANSWER_BYTES,
    curl_transport,
    parse_retry_after,
)
from batchgpt.records import content_text

if TYPE_CHECKING:
    from aiolimiter import AsyncLimiter

    from batchgpt.pacing import Pacer
    from batchgpt.providers.transport import CurlTransport

#: The usual rule of thumb for English text, used only for the estimate before sending.
CHARS_PER_TOKEN = 4
#: Completion tokens assumed for a request that sets no max_tokens (corrected by its usage).
DEFAULT_COMPLETION_TOKENS = 256
#: Body fields not passed on: batchgpt reads whole answers, never a stream.
NOT_PASSED = frozenset({"stream", "stream_options"})
#: OpenAI's code for a 429 that no waiting cures: the account's credit is spent.
QUOTA_CODES = frozenset({"insufficient_quota"})
KEY_VARIABLES = ("BATCHGPT_API_KEY", "OPENAI_API_KEY")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """Seconds in an `x-ratelimit-reset-*` value: `1s`, `6m0s`, `20ms`, `1h2m3.5s`, or `0.5`."""
    if not text:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """How long a 429 asks us to wait: `retry-after-ms` or `Retry-After` when sent, else the
    longest of `x-ratelimit-reset-requests` and `x-ratelimit-reset-tokens`."""
    if (milliseconds := parse_duration(headers.get("retry-after-ms"))) is not None:
        return milliseconds / 1000
    if (seconds := parse_retry_after(headers.get("retry-after"))) is not None:
        return seconds
    resets = [
        seconds
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if (seconds := parse_duration(headers.get(name))) is not None
    ]
    return max(resets) if resets else None


def _error_fields(body: bytes) -> tuple[str, str]:
    """The API's own message (capped) and error code from an error body of any dialect:
    OpenAI's `{"error": {"message", "code"}}`, vLLM's `{"message", "code"}`, Ollama's
    `{"error": "..."}`, FastAPI's `{"detail": ...}`; the body itself when it is none of them."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return quote_body(body) or "(empty body)", ""
    if not isinstance(obj, dict):
        return quote_body(body), ""
    error = obj.get("error")
    if isinstance(error, str):
        return quote_body(error), ""
    source = error if isinstance(error, dict) else obj
    message = source.get("message", obj.get("detail"))
    code = source.get("code") or source.get("type") or ""
    text = message if isinstance(message, str) else orjson.dumps(message or obj).decode()
    return quote_body(text), str(code)


def error_for(
    status: int, headers: Mapping[str, str], body: bytes, *, has_key: bool
) -> ProviderError:
    """The error a non-2xx answer of an OpenAI-compatible server stands for."""
    message, code = _error_fields(body)
    said = f"HTTP {status}: {message}"
    if status in (401, 403):
        hint = "" if has_key else f" (no key was sent: set {' or '.join(KEY_VARIABLES)})"
        return AuthError(f"the API refused the key: {said}{hint}", http_status=status)
    if status == 429:
        if code in QUOTA_CODES:
            return QuotaError(f"the API's quota is used up: {said}", http_status=status)
        return RateLimitedError(f"rate limited: {said}", retry_after=retry_after(headers))
    if status == 404:
        return NotFoundError(said, http_status=status)
    if status == 408:
        return RequestTimeoutError(f"the server timed out: {said}", http_status=status)
    if status >= 500:
        return ServerError(f"server error: {said}", http_status=status)
    return BadRequestError(said, http_status=status)


def answer_from(status: int, headers: Mapping[str, str], body: bytes, *, has_key: bool) -> Answer:
    """The answer in a chat-completion response, or the classified error it stands for."""
    if not 200 <= status < 300:
        raise error_for(status, headers, body, has_key=has_key)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadResponseError(
            f"reply is not JSON: {quote_body(body)}", http_status=status
        ) from exc
    choices = obj.get("choices") if isinstance(obj, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content", "") if isinstance(message, dict) else None
    if not isinstance(content, str | None):
        content = None
        message = None
    if message is None:
        raise BadResponseError(
            f"reply is not a chat completion: {quote_body(body)}", http_status=status
        )
    usage = obj.get("usage")
    counts = (
        {name: value for name, value in usage.items() if type(value) is int}
        if isinstance(usage, dict)
        else {}
    )
    return Answer(content or "", counts or None, obj)


def estimate_tokens(messages: Messages, params: Mapping[str, Any] | None) -> int:
    """Tokens a request may cost, before it is sent: its text at CHARS_PER_TOKEN, plus the
    completion it allows (max_completion_tokens or max_tokens, else DEFAULT_COMPLETION_TOKENS)."""
    characters = sum(len(content_text(message.get("content") or "")) for message in messages)
    params = params or {}
    allowed = params.get("max_completion_tokens", params.get("max_tokens"))
    if type(allowed) is not int or allowed < 0:
        allowed = DEFAULT_COMPLETION_TOKENS
    return math.ceil(characters / CHARS_PER_TOKEN) + allowed


class TokenBudget:
    """`--tpm`: one aiolimiter leaky bucket of tokens per `period` for the whole run.

    A request takes its estimate before it is sent; once answered, the difference to its real
    `usage` is owed (or credited) and settled by the next request's take, so over a run the
    bucket is charged what the server counted. A failed request takes nothing in the end. A take
    larger than the whole bucket waits for an empty bucket and carries the rest as owed.
    """

    def __init__(self, tokens_per_minute: int, *, period: float = 60.0) -> None:
        from aiolimiter import AsyncLimiter

        self.limiter: AsyncLimiter = AsyncLimiter(tokens_per_minute, period)
        #: Tokens taken from the bucket so far.
        self.taken = 0.0
        #: Tokens still to take (negative: already taken too many).
        self.owed = 0.0

    async def take(self, estimate: int) -> None:
        """Wait until `estimate` tokens (plus what is owed) fit in the budget, and take them."""
        amount, self.owed = estimate + self.owed, 0.0
        now = min(max(amount, 0.0), self.limiter.max_rate)
        self.owed += amount - now
        if now:
            await self.limiter.acquire(now)
            self.taken += now

    def settle(self, estimate: int, used: int | None) -> None:
        """Correct a taken `estimate` by what the request really used (None: the estimate);
        a credit never exceeds one bucket, so tokens saved long ago cannot make a burst."""
        owed = self.owed + (estimate if used is None else used) - estimate
        self.owed = max(owed, -self.limiter.max_rate)


class OpenAIClient:
    """One HTTP session (a `CurlTransport`, no impersonation) to an OpenAI-compatible API."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        proxy: str | None = None,
        timeout: float = 120.0,
        pacer: Pacer | None = None,
        budget: TokenBudget | None = None,
        max_clients: int = 10,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self.endpoint = base_url.rstrip("/") + "/chat/completions"
        self.proxy = proxy
        self.timeout = timeout
        self.pacer = pacer
        self.budget = budget
        self.max_clients = max_clients
        self.max_answer_bytes = max_answer_bytes
        self.requests = 0
        self._key = api_key or None
        self._http: CurlTransport | None = None

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    async def ask(
        self, messages: Messages, model: str, params: Mapping[str, Any] | None = None
    ) -> Answer:
        """The answer to `messages` from `model`; `params` go into the request body as given."""
        body = {k: v for k, v in (params or {}).items() if k not in NOT_PASSED}
        body.update(model=model, messages=messages)
        if self.budget is None:
            return await self._answer(orjson.dumps(body))
        estimate = estimate_tokens(messages, params)
        await self.budget.take(estimate)
        try:
            answer = await self._answer(orjson.dumps(body))
        except ProviderError:
            self.budget.settle(estimate, 0)
            raise
        counts = token_counts(answer.usage)
        self.budget.settle(estimate, None if counts is None else counts[2])
        return answer

    async def _answer(self, payload: bytes) -> Answer:
        status, headers, raw = await self._post(payload)
        return answer_from(status, headers, raw, has_key=self._key is not None)

    async def _post(self, payload: bytes) -> tuple[int, Mapping[str, str], bytes]:
        http = self._transport()
        if self.pacer is not None:
            await self.pacer.acquire()
        self.requests += 1
        try:
            status, headers, body = await http.request("POST", self.endpoint, data=payload)
        except ProviderError as error:  # from None: the cause's text holds the key unscrubbed
            raise type(error)(self._scrub(error.message.encode()).decode()) from None
        return status, headers, self._scrub(body)

    def _scrub(self, body: bytes) -> bytes:
        """`body` without the key, should the server echo it."""
        if self._key and self._key.encode() in body:
            return body.replace(self._key.encode(), b"***")
        return body

    def _transport(self) -> CurlTransport:
        if self._http is None:
            headers = {
                "content-type": "application/json",
                "accept": "application/json",
                "user-agent": f"batchgpt/{_version()}",
            }
            if self._key is not None:
                headers["authorization"] = f"Bearer {self._key}"
            self._http = curl_transport(
                headers=headers,
                browser=None,
                proxy=self.proxy,
                timeout=self.timeout,
                max_answer_bytes=self.max_answer_bytes,
                max_clients=self.max_clients,
            )
        return self._http


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # 25 ms: not at start-up

    try:
        return version("batchgpt")
    except PackageNotFoundError:
        return "dev"


class OpenAIBackend(Backend):
    name = "openai"
    default_model = "gpt-4o"  # DESIGN.md's --model default
    default_base_url = "https://api.openai.com/v1"
    models: ClassVar[tuple[str, ...] | None] = None
    sends_params = True
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "api_key",
            Text(),
            "openai: the API key, sent as a bearer token; never logged or shown.",
            secret=True,
            extra_envvars=("OPENAI_API_KEY",),
            in_job=False,
            on_command_line=False,
        ),
        Option(
            "tpm",
            Integer(0),
            "openai: tokens per minute for the whole run, estimated before each request and "
            "corrected by its usage; 0 = unlimited.",
            default=0,
        ),
    )

    def __init__(self, config: RunConfig, pacer: Pacer | None) -> None:
        super().__init__(config, pacer)
        tpm = config.backend_options.get("tpm") or 0
        self.budget = TokenBudget(tpm) if tpm else None

    def client(self, proxy: str | None, *, max_clients: int) -> OpenAIClient:
        return OpenAIClient(
            self.config.base_url,
            api_key=self.config.backend_options.get("api_key"),
            proxy=proxy,
            timeout=self.config.timeout,
            pacer=self.pacer,
            budget=self.budget,
            max_clients=max_clients,
            max_answer_bytes=self.config.max_answer_bytes,
        )
