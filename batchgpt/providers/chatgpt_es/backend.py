"""The `chatgpt-es` backend: chatgpt.es (or any site running the AI Power chat plugin)."""

from __future__ import annotations

from typing import ClassVar

from batchgpt.providers.base import Backend
from batchgpt.providers.chatgpt_es.provider import ChatGptEs
from batchgpt.providers.chatgpt_es.session import ChatGptEsSession


class ChatGptEsBackend(Backend):
    name = "chatgpt-es"
    default_model = ChatGptEs.default_model
    default_base_url = ChatGptEs.url
    models: ClassVar[tuple[str, ...] | None] = tuple(ChatGptEs.models)

    def client(self, proxy: str | None, *, max_clients: int) -> ChatGptEsSession:
        return ChatGptEsSession(
            self.config.base_url,
            proxy=proxy,
            timeout=self.config.timeout,
            limiter=self.pacer,
            max_clients=max_clients,
        )
