"""The `openai` backend over real loopback HTTP: `OpenAIClient` against the OpenAI-compatible
emulator for what is sent, every error these servers answer with, the answer cap and the token
budget; and the emulator itself against the official `openai` SDK, so its dialect is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from openai_support import KEY, RunningOpenAIEmulator, openai_emulator
from support import CLI, batchgpt, spawn_fixture

from batchgpt.emulator.openai import BAD_REQUEST_MESSAGE, expected_chat_answer
from batchgpt.errors import (
    AuthError,
    BadRequestError,
    BadResponseError,
    NotFoundError,
    QuotaError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    TransportError,
)
from batchgpt.providers import BACKENDS, backend_class
from batchgpt.providers.openai import (
    DEFAULT_COMPLETION_TOKENS,
    OpenAIBackend,
    OpenAIClient,
    TokenBudget,
    estimate_tokens,
    parse_duration,
    retry_after,
)

__all__ = ["openai_emulator", "spawn_fixture"]

HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello."},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
]
USER = [{"role": "user", "content": "Say something."}]


def client(emulator: RunningOpenAIEmulator, **kwargs: Any) -> OpenAIClient:
    kwargs.setdefault("timeout", 10.0)
    return OpenAIClient(emulator.url, **kwargs)


def test_registered_by_one_line() -> None:
    assert BACKENDS["openai"] == "batchgpt.providers.openai:OpenAIBackend"
    backend = backend_class("openai")
    assert backend is OpenAIBackend
    assert backend.models is None and backend.sends_params
    assert backend.check_model("any/model:7b-q4") == "any/model:7b-q4"
    assert backend.default_base_url == "https://api.openai.com/v1"
    key = next(o for o in backend.options if o.name == "api_key")
    assert key.secret and not key.on_command_line and not key.in_job
    assert key.envvars == ("BATCHGPT_API_KEY", "OPENAI_API_KEY")


# what is sent --------------------------------------------------------------------------------


async def test_messages_model_params_and_key_reach_the_server(
    openai_emulator: RunningOpenAIEmulator,
) -> None:
    params = {
        "temperature": 0.3,
        "max_tokens": 500,
        "response_format": {"type": "json_object"},
        "seed": 7,
        "stream": True,
    }
    async with client(openai_emulator, api_key=KEY) as http:
        answer = await http.ask(HISTORY, "my-local-model", params)
    (body,) = openai_emulator.stats.bodies
    assert body == {
        "temperature": 0.3,
        "max_tokens": 500,
        "response_format": {"type": "json_object"},
        "seed": 7,
        "model": "my-local-model",
        "messages": HISTORY,
    }
    assert openai_emulator.stats.authorizations == [f"Bearer {KEY}"]
    assert answer.text == expected_chat_answer(HISTORY)
    assert answer.body is not None and answer.body["model"] == "my-local-model"
    assert answer.body["choices"][0]["message"]["content"] == answer.text
    assert answer.usage == answer.body["usage"]
    assert answer.usage is not None and answer.usage["total_tokens"] > 0


async def test_params_change_the_answer(openai_emulator: RunningOpenAIEmulator) -> None:
    async with client(openai_emulator) as http:
        answer = await http.ask(USER, "m", {"max_tokens": 2})
    assert answer.text == expected_chat_answer(USER)[:8]
    assert answer.body is not None and answer.body["choices"][0]["finish_reason"] == "length"


async def test_no_key_sends_no_authorization(openai_emulator: RunningOpenAIEmulator) -> None:
    async with client(openai_emulator) as http:
        await http.ask(USER, "m")
    assert openai_emulator.stats.authorizations == [None]


# errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_is_auth_and_never_quoted(
    openai_emulator: RunningOpenAIEmulator, status: int
) -> None:
    openai_emulator.configure(api_key="sk-the-right-one", auth_status=status)
    async with client(openai_emulator, api_key=KEY) as http:
        with pytest.raises(AuthError) as info:
            await http.ask(USER, "m")
    error = info.value
    assert error.http_status == status and error.halts_after == 1 and not error.retryable
    assert "Incorrect API key provided: ***" in error.message  # the server echoed it in full
    assert KEY not in str(error) and KEY not in repr(error)


async def test_auth_without_a_key_says_where_the_key_comes_from(
    openai_emulator: RunningOpenAIEmulator,
) -> None:
    openai_emulator.configure(api_key="sk-the-right-one")
    async with client(openai_emulator) as http:
        with pytest.raises(AuthError, match="BATCHGPT_API_KEY or OPENAI_API_KEY"):
            await http.ask(USER, "m")


async def test_unknown_model_is_final_not_found(openai_emulator: RunningOpenAIEmulator) -> None:
    openai_emulator.configure(models="served-model")
    async with client(openai_emulator) as http:
        assert (await http.ask(USER, "served-model")).text
        with pytest.raises(NotFoundError, match="The model `other` does not exist") as info:
            await http.ask(USER, "other")
    assert info.value.http_status == 404 and not info.value.retryable
    assert info.value.kind == "not_found"


async def test_a_bad_request_is_final_with_the_apis_message(
    openai_emulator: RunningOpenAIEmulator,
) -> None:
    async with client(openai_emulator) as http:
        with pytest.raises(BadRequestError) as info:
            await http.ask([{"role": "user", "content": "[bad-request] please"}], "m")
    assert info.value.message == f"HTTP 400: {BAD_REQUEST_MESSAGE}"
    assert info.value.kind == "bad_request" and not info.value.retryable


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry_after": "3"}, 3.0),
        ({"retry_after": "", "reset_requests": "1s", "reset_tokens": "6m0s"}, 360.0),
        ({"retry_after": "", "reset_tokens": "20ms"}, 0.02),
        ({"retry_after": "", "reset_requests": "1m30.5s"}, 90.5),
        ({"retry_after": ""}, None),
    ],
)
async def test_429_carries_the_wait_the_server_asks_for(
    openai_emulator: RunningOpenAIEmulator, headers: dict[str, str], wait: float | None
) -> None:
    openai_emulator.configure(rate_limited_first=1, **headers)
    async with client(openai_emulator) as http:
        with pytest.raises(RateLimitedError) as info:
            await http.ask(USER, "m")
        assert (await http.ask(USER, "m")).text  # the second request is served
    assert info.value.retryable and info.value.http_status == 429
    assert info.value.retry_after == pytest.approx(wait) if wait else info.value.retry_after is None
    assert "Rate limit reached for requests" in info.value.message


async def test_a_spent_quota_is_final_and_halts(openai_emulator: RunningOpenAIEmulator) -> None:
    openai_emulator.configure(quota_exhausted=True)
    async with client(openai_emulator) as http:
        with pytest.raises(QuotaError, match="exceeded your current quota") as info:
            await http.ask(USER, "m")
    assert info.value.halts_after == 1 and not info.value.retryable


async def test_5xx_is_a_retryable_server_error(openai_emulator: RunningOpenAIEmulator) -> None:
    openai_emulator.configure(error_rate=1.0)
    async with client(openai_emulator) as http:
        with pytest.raises(ServerError, match=r"HTTP 50\d: <h1>Error 50\d</h1>") as info:
            await http.ask(USER, "m")
    assert info.value.retryable


async def test_a_hang_is_a_retryable_timeout(openai_emulator: RunningOpenAIEmulator) -> None:
    openai_emulator.configure(hang_rate=1.0, hang_seconds=5)
    async with client(openai_emulator, timeout=0.5) as http:
        with pytest.raises(RequestTimeoutError, match=r"timed out after 0\.5 s") as info:
            await http.ask(USER, "m")
    assert info.value.retryable


async def test_a_reset_is_a_retryable_connection_error(
    openai_emulator: RunningOpenAIEmulator,
) -> None:
    openai_emulator.configure(reset_rate=1.0)
    async with client(openai_emulator) as http:
        with pytest.raises(TransportError) as info:
            await http.ask(USER, "m")
    assert info.value.retryable and info.value.kind == "connection"


async def test_nothing_listening_is_a_connection_error(closed_port: int) -> None:
    async with OpenAIClient(f"http://127.0.0.1:{closed_port}/v1", timeout=5) as http:
        with pytest.raises(
            TransportError, match=r"POST http://127\.0\.0\.1:\d+/v1/chat/completions"
        ):
            await http.ask(USER, "m")


async def test_truncated_json_is_a_retryable_bad_response(
    openai_emulator: RunningOpenAIEmulator,
) -> None:
    openai_emulator.configure(truncate_rate=1.0)
    async with client(openai_emulator) as http:
        with pytest.raises(BadResponseError, match="reply is not JSON") as info:
            await http.ask(USER, "m")
    assert info.value.retryable


async def test_an_answer_over_the_cap_is_not_read(openai_emulator: RunningOpenAIEmulator) -> None:
    openai_emulator.configure(answer_chars=50_000)
    async with client(openai_emulator, max_answer_bytes=200_000) as http:
        assert len((await http.ask(USER, "m")).text) == 50_000
    async with client(openai_emulator, max_answer_bytes=20_000) as http:
        with pytest.raises(BadResponseError, match="larger than 20000 bytes") as info:
            await http.ask(USER, "m")
    assert info.value.retryable


async def test_error_messages_are_capped(openai_emulator: RunningOpenAIEmulator) -> None:
    openai_emulator.configure(models="x" * 5000)
    async with client(openai_emulator) as http:
        with pytest.raises(NotFoundError) as info:
            await http.ask(USER, "y" * 5000)
    assert len(info.value.message) < 400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("2", 2.0),
        ("", None),
        ("soon", None),
        ("1s junk", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_prefers_the_servers_explicit_wait() -> None:
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == pytest.approx(0.25)
    assert retry_after({"retry-after": "9", "x-ratelimit-reset-tokens": "1m"}) == 9.0
    assert retry_after({"x-ratelimit-reset-tokens": "1m", "x-ratelimit-reset-requests": "2s"}) == 60
    assert retry_after({}) is None


# the token budget ------------------------------------------------------------------------------


def test_estimate_counts_text_and_the_completion_allowed() -> None:
    assert estimate_tokens(USER, None) == 4 + DEFAULT_COMPLETION_TOKENS
    assert estimate_tokens(USER, {"max_tokens": 10}) == 14
    assert estimate_tokens(USER, {"max_completion_tokens": 3, "max_tokens": 10}) == 7
    assert estimate_tokens(HISTORY, {"max_tokens": 0}) == 10  # 37 characters


async def test_the_budget_is_charged_what_the_server_counted(
    openai_emulator: RunningOpenAIEmulator,
) -> None:
    """Overestimates (max_tokens far above the answer) are credited back, failures cost
    nothing: what the bucket took plus what is still owed is the servers' own total."""
    budget = TokenBudget(100_000)
    prompts = [[{"role": "user", "content": f"prompt {n}"}] for n in range(12)]
    prompts[5] = [{"role": "user", "content": "[bad-request] this one fails"}]
    async with client(openai_emulator, budget=budget) as http:
        for messages in prompts:
            with contextlib.suppress(BadRequestError):
                await http.ask(messages, "m", {"max_tokens": 2000})
    served = sum(tokens for _, tokens in openai_emulator.stats.tokens)
    assert len(openai_emulator.stats.tokens) == 11
    assert budget.taken + budget.owed == pytest.approx(served)
    assert budget.taken < 2 * 2000  # not twelve estimates of 2000+


async def test_a_credit_never_exceeds_one_bucket() -> None:
    budget = TokenBudget(1000)
    await budget.take(900)
    budget.settle(900, 0)
    budget.settle(900, 0)
    assert budget.owed == -1000


async def test_a_take_over_the_whole_bucket_waits_for_an_empty_one_and_owes_the_rest() -> None:
    budget = TokenBudget(1000, period=0.05)
    await budget.take(2500)
    assert (budget.taken, budget.owed) == (1000, 1500)
    await budget.take(10)
    assert (budget.taken, budget.owed) == (2000, 510)


async def test_tokens_per_period_are_never_exceeded(
    openai_emulator: RunningOpenAIEmulator,
) -> None:
    """A 1-second period stands in for the minute: the bucket holds 300 tokens and refills 300
    a second. The server counts more than the estimate (extra completion tokens), so the last
    request cannot be sent before everything taken beyond one bucket has leaked out."""
    openai_emulator.configure(extra_completion_tokens=100)
    budget = TokenBudget(300, period=1.0)
    prompts = [[{"role": "user", "content": f"prompt number {n}"}] for n in range(10)]
    params = {"max_tokens": 30}
    started = time.monotonic()
    async with client(openai_emulator, budget=budget) as http:
        for messages in prompts:  # one at a time: each take follows the last correction
            await http.ask(messages, "m", params)
    used = [tokens for _, tokens in openai_emulator.stats.tokens]
    before_last = sum(used[:-1]) + estimate_tokens(prompts[-1], params)
    last_arrival = openai_emulator.stats.request_times[-1]
    assert before_last > 2 * 300
    assert last_arrival - started >= (before_last - 300) / 300


async def test_one_budget_is_shared_by_concurrent_clients(
    openai_emulator: RunningOpenAIEmulator,
) -> None:
    """Every answer costs more than its estimate, so each take is at least its estimate."""
    openai_emulator.configure(extra_completion_tokens=50)
    budget = TokenBudget(200, period=1.0)
    params = {"max_tokens": 40}
    prompts = [[{"role": "user", "content": f"prompt {n}"}] for n in range(16)]
    clients = [client(openai_emulator, budget=budget) for _ in range(4)]
    started = time.monotonic()
    await asyncio.gather(
        *(clients[n % 4].ask(messages, "m", params) for n, messages in enumerate(prompts))
    )
    for http in clients:
        await http.close()
    estimates = sum(estimate_tokens(messages, params) for messages in prompts)
    assert max(openai_emulator.stats.request_times) - started >= (estimates - 200) / 200


# the emulator, as the official SDK sees it ---------------------------------------------------


def sdk(emulator: RunningOpenAIEmulator, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=emulator.url, api_key=key, max_retries=0, timeout=10)


def test_the_sdk_reads_the_emulators_answers(openai_emulator: RunningOpenAIEmulator) -> None:
    completion = sdk(openai_emulator).chat.completions.create(
        model="m", messages=HISTORY, temperature=0.1
    )
    assert completion.choices[0].message.content == expected_chat_answer(HISTORY)
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert [m.id for m in sdk(openai_emulator).models.list()] == ["emulated-model"]


@pytest.mark.parametrize(
    ("settings", "content", "error"),
    [
        ({"api_key": "sk-other"}, "hi", openai.AuthenticationError),
        ({"api_key": "sk-other", "auth_status": 403}, "hi", openai.PermissionDeniedError),
        ({"models": "a,b"}, "hi", openai.NotFoundError),
        ({}, "[bad-request]", openai.BadRequestError),
        ({"rate_limited_first": 1}, "hi", openai.RateLimitError),
        ({"quota_exhausted": True}, "hi", openai.RateLimitError),
        ({"error_rate": 1.0}, "hi", openai.InternalServerError),
    ],
)
def test_the_sdk_reads_the_emulators_errors(
    openai_emulator: RunningOpenAIEmulator,
    settings: dict[str, Any],
    content: str,
    error: type[Exception],
) -> None:
    openai_emulator.configure(**settings)
    with pytest.raises(error):
        sdk(openai_emulator).chat.completions.create(
            model="m", messages=[{"role": "user", "content": content}]
        )


def test_the_sdk_reads_the_quota_code(openai_emulator: RunningOpenAIEmulator) -> None:
    openai_emulator.configure(quota_exhausted=True)
    with pytest.raises(openai.RateLimitError) as info:
        sdk(openai_emulator).chat.completions.create(model="m", messages=USER)
    assert info.value.code == "insufficient_quota"


def test_the_emulator_command_serves_the_openai_api(spawn) -> None:
    process = spawn([*CLI, "emulator", "--api", "openai", "--port", "0", "--set", f"api_key={KEY}"])
    assert process.stdout is not None
    line = process.stdout.readline()
    url = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
    assert url, line
    client = openai.OpenAI(base_url=url[0], api_key=KEY, max_retries=0, timeout=10)
    completion = client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == expected_chat_answer(USER)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url[0], api_key="sk-other", max_retries=0).models.list()
    unknown = batchgpt([*CLI, "emulator", "--api", "openai", "--port", "0", "--set", "bogus=1"])
    assert unknown.returncode == 2 and "unknown emulator setting 'bogus'" in unknown.stderr


def test_the_control_api_changes_settings_and_zeroes_the_counters(
    openai_emulator: RunningOpenAIEmulator,
) -> None:
    """What benchmarks use on an emulator in another process: the same `/__emulator__/` API as
    the chatgpt.es emulator's."""
    control = openai_emulator.url.removesuffix("/v1") + "/__emulator__/"

    def post(changes: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(
            control + "config", data=json.dumps(changes).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    sdk(openai_emulator).chat.completions.create(model="m", messages=USER)
    with urllib.request.urlopen(control + "stats", timeout=10) as response:
        assert json.loads(response.read())["answers"] == 1
    status, settings = post({"reset_stats": True, "latency": "0.01"})
    assert status == 200 and settings["latency"] == 0.01
    assert openai_emulator.stats.answers == 0
    status, reply = post({"no_such_setting": 1})
    assert status == 400 and "no_such_setting" in reply["error"]
