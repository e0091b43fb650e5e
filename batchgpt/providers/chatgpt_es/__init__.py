"""chatgpt.es: the AI Power chat plugin's protocol (PROTOCOL.md), a session client that speaks
it, and `ChatGptEs`, the gpt4free provider built on that client."""

from batchgpt.providers.chatgpt_es.provider import ChatGptEs
from batchgpt.providers.chatgpt_es.session import ChatGptEsSession

__all__ = ["ChatGptEs", "ChatGptEsSession"]
