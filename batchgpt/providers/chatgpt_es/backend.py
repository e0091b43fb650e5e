"""The `chatgpt-es` backend: chatgpt.es, or any site running the AI Power chat plugin."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, ClassVar

from batchgpt.config import Choice, Integer, Option
from batchgpt.errors import UsageError
from batchgpt.providers.base import Backend, ChatClient
from batchgpt.providers.chatgpt_es.provider import ChatGptEs
from batchgpt.providers.chatgpt_es.wordpress import CHATS

if TYPE_CHECKING:
    from batchgpt.config import RunConfig
    from batchgpt.pacing import Pacer
    from batchgpt.providers.chatgpt_es.session import ChatGptEsSession


class ChatGptEsBackend(Backend):
    name = "chatgpt-es"
    default_model = ChatGptEs.default_model
    default_base_url = ChatGptEs.url
    models: ClassVar[tuple[str, ...] | None] = tuple(ChatGptEs.models)
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "chat",
            Choice(CHATS),
            "Which chat generation to speak: auto reads it from the page.",
            default="auto",
        ),
        Option(
            "bot_id",
            Integer(1),
            "AIPKit: which chatbot on the page to ask.",
            default_text="the first",
        ),
    )

    def __init__(self, config: RunConfig, pacer: Pacer | None) -> None:
        super().__init__(config, pacer)
        self._guest_ids: dict[str | None, str] = {}

    def client(self, proxy: str | None, *, max_clients: int) -> ChatGptEsSession:
        """A session through `proxy`, known to the site by that proxy's guest id: one per proxy
        for the whole run, shared by its sessions, as a browser keeps one (PROTOCOL.md §C2)."""
        from batchgpt.providers.chatgpt_es.session import ChatGptEsSession

        options = self.config.backend_options
        return ChatGptEsSession(
            self.config.base_url,
            proxy=proxy,
            timeout=self.config.timeout,
            limiter=self.pacer,
            max_clients=max_clients,
            chat=options["chat"],
            bot_id=options["bot_id"],
            guest_id=self._guest_ids.setdefault(proxy, str(uuid.uuid4())),
            max_answer_bytes=self.config.max_answer_bytes,
        )

    async def preflight(self, client: ChatClient) -> None:
        """A named bot must be on the page before anything is written (exit 2 otherwise)."""
        if self.config.backend_options["bot_id"] is None:
            return
        from batchgpt.providers.chatgpt_es.session import ChatGptEsSession, MissingBotError

        assert isinstance(client, ChatGptEsSession)
        try:
            await client.connect()
        except MissingBotError as error:
            raise UsageError(f"--bot-id: {error.message}; nothing was sent") from None
