"""`ChatGptEs`: the gpt4free provider of that name, rebuilt on a non-blocking session client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from batchgpt.providers.base import Messages
from batchgpt.providers.chatgpt_es.message import SYSTEM_PROMPT, format_message
from batchgpt.providers.chatgpt_es.wordpress import AJAX_PATH
from batchgpt.providers.gpt4free import AsyncGeneratorProvider, ProviderModelMixin


class ChatGptEs(AsyncGeneratorProvider, ProviderModelMixin):
    url: ClassVar[str] = "https://chatgpt.es"
    api_endpoint: ClassVar[str] = "https://chatgpt.es" + AJAX_PATH
    #: gpt4free's names for it; a subclass pointed at another site keeps `parent`.
    label: ClassVar[str | None] = "ChatGPT.es"
    parent: ClassVar[str] = "ChatGptEs"

    working = True
    supports_stream = True
    supports_system_message = False
    supports_message_history = False

    default_model = "gpt-4o"
    models: ClassVar[list[str]] = ["gpt-4", "gpt-4o", "gpt-4o-mini"]

    SYSTEM_PROMPT: ClassVar[str] = SYSTEM_PROMPT
    #: One guest id per site and proxy for the process, as a browser keeps one (PROTOCOL.md §C2).
    _guest_ids: ClassVar[dict[tuple[str, str | None], str]] = {}

    @classmethod
    def format_message(cls, messages: Messages) -> str:
        """The message sent for `messages`: the system prompt, a space, the formatted messages."""
        return format_message(messages, cls.SYSTEM_PROMPT)

    @classmethod
    async def create_async_generator(  # type: ignore[override]
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        stream: bool = False,
        timeout: float = 120.0,
        chat: str = "auto",
        bot_id: int | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[str]:
        """Yield the answer, from whichever chat generation the site speaks (`chat` forces one,
        `bot_id` picks an AIPKit bot); with `stream=True`, piece by piece as the site sends it."""
        from batchgpt.providers.chatgpt_es.session import ChatGptEsSession

        cls.get_model(model)
        message = cls.format_message(messages)
        guest_id = cls._guest_ids.setdefault((cls.url, proxy), str(uuid.uuid4()))
        async with ChatGptEsSession(
            cls.url,
            api_endpoint=cls.api_endpoint,
            proxy=proxy,
            timeout=timeout,
            chat=chat,
            bot_id=bot_id,
            guest_id=guest_id,
        ) as session:
            if stream:
                async for piece in session.stream(message):
                    yield piece
            else:
                yield await session.send(message)
