"""`ChatGptEs`: the gpt4free provider of that name, rebuilt on a non-blocking session client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from batchgpt.providers.base import AsyncGeneratorProvider, Messages, ProviderModelMixin
from batchgpt.providers.session import AJAX_PATH, ChatGptEsSession


def content_text(content: str | list[dict[str, Any]]) -> str:
    """A message's content as text: a string, or the text parts of a list joined."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")


def format_prompt(messages: Messages) -> str:
    """gpt4free's `format_prompt`: one message as is, several as `Role: content` lines."""
    if len(messages) == 1:
        return content_text(messages[0]["content"])
    lines = [f"{m['role'].capitalize()}: {content_text(m['content'])}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


class ChatGptEs(AsyncGeneratorProvider, ProviderModelMixin):
    url: ClassVar[str] = "https://chatgpt.es"
    api_endpoint: ClassVar[str] = "https://chatgpt.es" + AJAX_PATH

    working = True
    supports_stream = True
    supports_system_message = False
    supports_message_history = False

    default_model = "gpt-4o"
    models: ClassVar[list[str]] = ["gpt-4", "gpt-4o", "gpt-4o-mini"]

    SYSTEM_PROMPT: ClassVar[str] = (
        "Your default language is English. Always respond in English unless the user's message "
        "is in a different language. If the user's message is not in English, respond in the "
        "language of the user's message. Maintain this language behavior throughout the "
        "conversation unless explicitly instructed otherwise. User input:"
    )

    @classmethod
    def format_message(cls, messages: Messages) -> str:
        """The `message` form field: the system prompt, a space, then the formatted messages."""
        return f"{cls.SYSTEM_PROMPT} {format_prompt(messages)}"

    @classmethod
    async def create_async_generator(  # type: ignore[override]
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        stream: bool = False,
        timeout: float = 120.0,
        **kwargs: Any,
    ) -> AsyncIterator[str]:
        """Yield the answer; with `stream=True`, piece by piece as the site streams it."""
        cls.get_model(model)
        message = cls.format_message(messages)
        async with ChatGptEsSession(
            cls.url, api_endpoint=cls.api_endpoint, proxy=proxy, timeout=timeout
        ) as session:
            if stream:
                async for piece in session.stream(message):
                    yield piece
            else:
                yield await session.ask(message)
