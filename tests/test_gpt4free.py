"""`ChatGptEs` as a gpt4free provider: the real g4f from PyPI drives it against the emulator.

Each way g4f runs a provider (`g4f.ChatCompletion`, `g4f.client.Client` and `AsyncClient`,
`RetryProvider`, `IterListProvider`, `RotatedProvider`), streaming and not, reads a different part
of the provider interface; batchgpt's provider does not import g4f. The API server is in
test_g4f_api.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import g4f
import g4f.models
import pytest
from conftest import local_provider
from g4f.client import AsyncClient, Client
from g4f.cookies import CookiesConfig, set_cookies_dir
from g4f.providers.retry_provider import (
    IterListProvider,
    ProviderCircuitBreaker,
    RetryProvider,
    RotatedProvider,
)
from support import message_of

from batchgpt.emulator import expected_answer
from batchgpt.errors import ModelNotSupportedError
from batchgpt.providers import ChatGptEs

PROMPT = "Tell me a long story about the sea and the stars."
MESSAGES = [{"role": "user", "content": PROMPT}]
ANSWER = expected_answer(message_of(PROMPT))


@pytest.fixture(autouse=True)
def g4f_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """g4f appends a usage log to its cookies folder after each answer: keep it in the test's
    folder. Its version check (a request to PyPI on first use) stays off, and its circuit breaker
    (failures counted by provider name, across calls) starts afresh."""
    cookies_dir = CookiesConfig.cookies_dir
    set_cookies_dir(str(tmp_path))
    monkeypatch.setattr(g4f.debug, "version_check", False)
    ProviderCircuitBreaker.reset()
    yield
    ProviderCircuitBreaker.reset()
    set_cookies_dir(cookies_dir)


def contents(chunks: list) -> list[str]:
    """The text of each streamed chat-completion chunk that carries some."""
    return [chunk.choices[0].delta.content for chunk in chunks if chunk.choices[0].delta.content]


def assert_streamed(chunks: list) -> None:
    pieces = contents(chunks)
    assert len(pieces) > 1
    assert "".join(pieces) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


# g4f.ChatCompletion -------------------------------------------------------------------------------


def test_chat_completion_create(emulator) -> None:
    assert g4f.ChatCompletion.create("gpt-4o", MESSAGES, provider=emulator.provider) == ANSWER


@pytest.mark.emulator_config(stream=True)
def test_chat_completion_create_streaming(emulator) -> None:
    pieces = list(
        g4f.ChatCompletion.create("gpt-4o", MESSAGES, provider=emulator.provider, stream=True)
    )
    assert len(pieces) > 1
    assert "".join(pieces) == ANSWER


async def test_chat_completion_create_async(emulator) -> None:
    answer = await g4f.ChatCompletion.create_async("gpt-4o", MESSAGES, provider=emulator.provider)
    assert answer == ANSWER


# g4f.client.Client -------------------------------------------------------------------------------


def test_client(emulator) -> None:
    completion = Client(provider=emulator.provider).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert emulator.stats.forms[0]["message"] == message_of(PROMPT)


@pytest.mark.emulator_config(stream=True)
def test_client_streaming(emulator) -> None:
    client = Client(provider=emulator.provider)
    assert_streamed(
        list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    )


def test_client_counts_the_answer_in_the_providers_live_score(emulator) -> None:
    provider = emulator.provider
    Client(provider=provider).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    Client(provider=provider).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert provider.live == 2
    assert ChatGptEs.live == 0


@pytest.mark.parametrize("model", ["auto", "", g4f.models.gpt_4o_mini, "GPT-4O-MINI"])
def test_client_model_names_as_g4f_maps_them(emulator, model) -> None:
    completion = Client(provider=emulator.provider).chat.completions.create(
        model=model, messages=MESSAGES
    )
    assert completion.choices[0].message.content == ANSWER


def test_client_unknown_model_is_refused_before_any_request(emulator) -> None:
    client = Client(provider=emulator.provider)
    with pytest.raises(ModelNotSupportedError, match="gpt-5-ultra"):
        client.chat.completions.create(model="gpt-5-ultra", messages=MESSAGES)
    assert emulator.stats.gets == 0
    assert emulator.stats.posts == 0


def test_client_models_lists_the_providers_models_whatever_the_api_key() -> None:
    assert Client(provider=ChatGptEs).models.get_all() == ChatGptEs.models
    assert Client(provider=ChatGptEs, api_key="sk-anything").models.get_all() == ChatGptEs.models


# g4f.client.AsyncClient --------------------------------------------------------------------------


async def test_async_client(emulator) -> None:
    client = AsyncClient(provider=emulator.provider)
    completion = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == ANSWER
    assert completion.provider == client.chat.completions.provider.__name__
    assert completion.model == "gpt-4o-mini"


@pytest.mark.emulator_config(stream=True)
async def test_async_client_streaming(emulator) -> None:
    client = AsyncClient(provider=emulator.provider)
    chunks = [
        chunk async for chunk in client.chat.completions.stream(model="gpt-4o", messages=MESSAGES)
    ]
    assert_streamed(chunks)


@pytest.mark.emulator_config(stream=True)
async def test_async_client_create_with_stream_true(emulator) -> None:
    client = AsyncClient(provider=emulator.provider)
    response = client.chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    assert_streamed([chunk async for chunk in response])


# RetryProvider, IterListProvider, RotatedProvider -------------------------------------------------


@pytest.mark.parametrize("kind", [RetryProvider, IterListProvider, RotatedProvider])
def test_list_providers_fall_over_to_chatgpt_es(emulator, closed_port, kind) -> None:
    """The first provider's site refuses connections; g4f moves on and the emulator answers."""
    unreachable = local_provider(f"http://127.0.0.1:{closed_port}")
    reachable = emulator.provider
    providers = kind([unreachable, reachable], shuffle=False)
    completion = Client(provider=providers).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert completion.choices[0].message.content == ANSWER
    assert providers.last_provider is reachable
    assert emulator.stats.posts == 1


@pytest.mark.emulator_config(stream=True)
@pytest.mark.parametrize("kind", [RetryProvider, IterListProvider])
def test_list_providers_streaming(emulator, kind) -> None:
    client = Client(provider=kind([emulator.provider], shuffle=False))
    assert_streamed(
        list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    )


@pytest.mark.parametrize("kind", [RetryProvider, IterListProvider])
async def test_list_providers_async(emulator, kind) -> None:
    client = AsyncClient(provider=kind([emulator.provider], shuffle=False))
    completion = await client.chat.completions.create(model="auto", messages=MESSAGES)
    assert completion.choices[0].message.content == ANSWER


def test_retry_provider_retrying_one_provider(emulator) -> None:
    provider = RetryProvider([emulator.provider], single_provider_retry=True)
    completion = Client(provider=provider).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert completion.choices[0].message.content == ANSWER


# the interface g4f reads -------------------------------------------------------------------------


def test_provider_dict_and_family() -> None:
    assert ChatGptEs.get_dict() == {
        "name": "ChatGptEs",
        "url": "https://chatgpt.es",
        "label": "ChatGPT.es",
    }
    pointed = local_provider("http://127.0.0.1:9")
    assert pointed.get_dict()["url"] == "http://127.0.0.1:9"
    assert pointed.get_parent() == "ChatGptEs"
    assert not ChatGptEs.needs_auth
    assert ChatGptEs.use_stream_timeout


@pytest.mark.parametrize(
    ("asked", "model"),
    [
        ("auto", "gpt-4o"),
        ("GPT-4", "gpt-4"),
        ("4o-mini", "gpt-4o-mini"),
        ("gpt-4o", "gpt-4o"),
    ],
)
def test_get_model_follows_g4f(asked: str, model: str) -> None:
    assert ChatGptEs.get_model(asked, api_key="ignored") == model
