"""`ChatGptEs`, the gpt4free-style provider, used as gpt4free code uses it, against the emulator."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from batchgpt.emulator import expected_answer
from batchgpt.errors import ModelNotSupportedError
from batchgpt.providers import ChatGptEs
from batchgpt.providers.chatgpt_es.message import format_prompt
from batchgpt.records import content_text

# The legacy chat, answering in JSON (streaming off), as these tests were written for it.
pytestmark = pytest.mark.emulator_config(chat="legacy", stream=False)

SEED_SYSTEM_PROMPT = (
    "Your default language is English. Always respond in English unless the user's message is in "
    "a different language. If the user's message is not in English, respond in the language of "
    "the user's message. Maintain this language behavior throughout the conversation unless "
    "explicitly instructed otherwise. User input:"
)


def sent(prompt: str) -> str:
    """The `message` field the provider sends for `prompt`."""
    return f"{SEED_SYSTEM_PROMPT} {prompt}"


# the seed's usage example -------------------------------------------------------------------------


async def test_seed_usage_example(emulator) -> None:
    provider = emulator.provider
    assert issubclass(provider, ChatGptEs)
    messages = [{"role": "user", "content": "Hello, how are you?"}]
    chunks = []
    async for chunk in provider.create_async_generator("gpt-4o", messages):
        chunks.append(chunk)
    assert "".join(chunks) == expected_answer(sent("Hello, how are you?"))


async def test_create_async_returns_the_whole_answer(emulator) -> None:
    messages = [{"role": "user", "content": "Hola"}]
    answer = await emulator.provider.create_async("gpt-4o-mini", messages)
    assert answer == expected_answer(sent("Hola"))


@pytest.mark.emulator_config(stream=True)
async def test_streaming(emulator) -> None:
    messages = [{"role": "user", "content": "Tell me a long story about the sea and the stars."}]
    pieces = [
        piece
        async for piece in emulator.provider.create_async_generator(
            "gpt-4o", messages, stream=True, timeout=5
        )
    ]
    assert len(pieces) > 1
    assert "".join(pieces) == expected_answer(sent(messages[0]["content"]))


async def test_stream_false_on_a_streaming_site_yields_one_piece(emulator) -> None:
    emulator.configure(stream=True)
    messages = [{"role": "user", "content": "Hola"}]
    pieces = [p async for p in emulator.provider.create_async_generator("gpt-4o", messages)]
    assert pieces == [expected_answer(sent("Hola"))]


def test_provider_attributes() -> None:
    assert ChatGptEs.url == "https://chatgpt.es"
    assert ChatGptEs.api_endpoint == "https://chatgpt.es/wp-admin/admin-ajax.php"
    assert ChatGptEs.working
    assert ChatGptEs.supports_stream
    assert not ChatGptEs.supports_system_message
    assert not ChatGptEs.supports_message_history
    assert ChatGptEs.SYSTEM_PROMPT == SEED_SYSTEM_PROMPT


# models -------------------------------------------------------------------------------------------


def test_models() -> None:
    assert ChatGptEs.default_model == "gpt-4o"
    assert ChatGptEs.get_models() == ["gpt-4", "gpt-4o", "gpt-4o-mini"]
    for model in ChatGptEs.models:
        assert ChatGptEs.get_model(model) == model


@pytest.mark.parametrize("model", ["", None])
def test_empty_model_is_the_default(model: str | None) -> None:
    assert ChatGptEs.get_model(model) == "gpt-4o"


async def test_empty_model_works_against_the_site(emulator) -> None:
    messages = [{"role": "user", "content": "Hola"}]
    assert await emulator.provider.create_async("", messages) == expected_answer(sent("Hola"))


async def test_unknown_model_is_refused_before_any_request(emulator) -> None:
    messages = [{"role": "user", "content": "Hola"}]
    with pytest.raises(ModelNotSupportedError) as info:
        async for _ in emulator.provider.create_async_generator("gpt-5-ultra", messages):
            pass
    assert isinstance(info.value, ValueError)
    assert info.value.kind == "model_not_supported"
    assert not info.value.retryable
    assert "gpt-5-ultra" in str(info.value)
    assert emulator.stats.gets == 0
    assert emulator.stats.posts == 0


# prompt formatting --------------------------------------------------------------------------------


def test_format_prompt_one_message_is_its_content() -> None:
    assert format_prompt([{"role": "user", "content": "Hola\nmundo"}]) == "Hola\nmundo"


def test_format_prompt_one_system_message_is_its_content_too() -> None:
    assert format_prompt([{"role": "system", "content": "Be brief."}]) == "Be brief."


def test_format_prompt_several_messages() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]
    assert format_prompt(messages) == (
        "System: Be brief.\nUser: Hi\nAssistant: Hello!\nUser: How are you?\nAssistant:"
    )


def test_format_prompt_content_parts() -> None:
    parts = [
        {"type": "text", "text": "Describe "},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
        {"type": "text", "text": "this."},
    ]
    assert content_text(parts) == "Describe this."
    assert format_prompt([{"role": "user", "content": parts}]) == "Describe this."


def test_format_message_prefixes_the_system_prompt() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Again"}]
    assert ChatGptEs.format_message(messages) == sent("User: Hi\nUser: Again\nAssistant:")


async def test_several_messages_are_sent_formatted(emulator) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    answer = await emulator.provider.create_async("gpt-4", messages)
    message = sent("System: Be brief.\nUser: Hi\nAssistant:")
    assert answer == expected_answer(message)
    assert emulator.stats.forms[0]["message"] == message


# the wire -----------------------------------------------------------------------------------------


async def test_form_fields_match_the_protocol(emulator) -> None:
    messages = [{"role": "user", "content": "¿Qué tal? «ñ»"}]
    await emulator.provider.create_async("gpt-4o", messages)
    await emulator.provider.create_async("gpt-4o", messages)
    first, second = emulator.stats.forms
    message = sent("¿Qué tal? «ñ»")
    assert first["action"] == "wpaicg_chat_shortcode_message"
    assert re.fullmatch(r"[0-9a-f]{10}", first["_wpnonce"])
    assert first["post_id"] == "106"
    assert first["url"] == emulator.url
    assert first["message"] == message
    assert first["bot_id"] == "0"
    assert first["chatbot_identity"] == "shortcode"
    assert re.fullmatch(r"[A-Za-z0-9]{10}", first["wpaicg_chat_client_id"])
    # The plugin counts a guest's tokens by this id: rotating it would evade the limit (§C5).
    assert first["wpaicg_chat_client_id"] == second["wpaicg_chat_client_id"]
    history = json.loads(first["wpaicg_chat_history"])
    assert history == [], "the browser sends earlier turns only; a copy doubles the prompt"
    assert 1 <= int(first["chat_id"]) <= 100000
    assert first["wpaicg_user_agree"] == "1"
    assert "model" not in first
    known = {
        "action",
        "_wpnonce",
        "post_id",
        "url",
        "message",
        "bot_id",
        "chatbot_identity",
        "wpaicg_chat_client_id",
        "wpaicg_chat_history",
        "chat_id",
        "wpaicg_user_agree",
    }
    assert set(first) <= known


async def test_headers_match_the_protocol(emulator) -> None:
    await emulator.provider.create_async("gpt-4o", [{"role": "user", "content": "Hola"}])
    (headers,) = emulator.stats.headers
    assert headers["x-requested-with"] == "XMLHttpRequest"
    assert headers["origin"] == emulator.url
    assert headers["referer"] == emulator.url
    assert headers["accept"] == "*/*"
    assert headers["accept-language"] == "en-US,en;q=0.9"
    assert headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert re.search(r"Mozilla/5\.0 .*Chrome/\d+", headers["user-agent"])
    assert "sec-ch-ua" in headers
    assert headers["cookie"].startswith("__cf_bm=")


async def test_each_call_uses_its_own_session(emulator) -> None:
    for n in range(3):
        await emulator.provider.create_async("gpt-4o", [{"role": "user", "content": str(n)}])
    assert emulator.stats.gets == 3
    assert len(emulator.stats.forms) == 3


# concurrency --------------------------------------------------------------------------------------


async def test_the_event_loop_is_never_blocked(emulator) -> None:
    """50 prompts against 0.5 s latency: a heartbeat on the loop keeps beating while they wait."""
    emulator.configure(latency=0.5)
    gaps: list[float] = []
    seen_in_flight: list[int] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            seen_in_flight.append(emulator.stats.in_flight)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async def ask(n: int) -> str:
        messages = [{"role": "user", "content": f"prompt {n}"}]
        return await emulator.provider.create_async("gpt-4o", messages, timeout=20)

    beat = asyncio.create_task(heartbeat())
    try:
        answers = await asyncio.gather(*(ask(n) for n in range(50)))
    finally:
        done.set()
        await beat

    assert answers == [expected_answer(sent(f"prompt {n}")) for n in range(50)]
    assert emulator.stats.max_in_flight >= 10  # asked concurrently, not one after another
    # The loop ran while ten requests waited at the site: no request holds it while it waits.
    assert max(seen_in_flight) >= 10
    # What no counter can say: the loop never stalled for long in between (a blocking parse or
    # a synchronous call). A bound of time, generous for a noisy machine.
    assert max(gaps) < 1.0


# the AIPKit chat ----------------------------------------------------------------------------------


@pytest.mark.emulator_config(chat="aipkit", stream=True)
async def test_streaming_yields_the_aipkit_deltas_as_they_arrive(emulator) -> None:
    messages = [{"role": "user", "content": "Tell me a long story, with many words in it."}]
    pieces = [
        piece
        async for piece in emulator.provider.create_async_generator("gpt-4o", messages, stream=True)
    ]
    assert len(pieces) > 3
    assert "".join(pieces) == expected_answer(sent(messages[0]["content"]))


@pytest.mark.emulator_config(chat="aipkit")
async def test_create_async_on_the_aipkit_chat_and_one_guest_per_process(emulator) -> None:
    provider = emulator.provider
    for n in range(3):
        messages = [{"role": "user", "content": f"question {n}"}]
        assert await provider.create_async("gpt-4o", messages) == expected_answer(
            sent(f"question {n}")
        )
    assert emulator.stats.gets == 3  # each call its own session...
    assert len(emulator.stats.guests) == 1  # ...and the same guest, as one browser would be


@pytest.mark.emulator_config(chat="aipkit", bots="4,7")
async def test_a_bot_can_be_named(emulator) -> None:
    messages = [{"role": "user", "content": "hola"}]
    await emulator.provider.create_async("gpt-4o", messages, bot_id=7)
    assert [form["bot_id"] for form in emulator.stats.forms] == ["7"]
