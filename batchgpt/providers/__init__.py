"""Providers: `ChatGptEs` and the session client it is built on."""

from batchgpt.providers.chatgpt_es import ChatGptEs
from batchgpt.providers.session import ChatGptEsSession

__all__ = ["ChatGptEs", "ChatGptEsSession"]
