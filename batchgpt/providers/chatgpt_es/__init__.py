"""chatgpt.es: the AI Power chat plugin's protocol (PROTOCOL.md), a session client that speaks
it, and `ChatGptEs`, the gpt4free provider built on that client. The exports load on first use,
so the backend's options (`--help`) do not pull in the client."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchgpt.providers.chatgpt_es.provider import ChatGptEs
    from batchgpt.providers.chatgpt_es.session import ChatGptEsSession

_EXPORTS = {
    "ChatGptEs": "batchgpt.providers.chatgpt_es.provider",
    "ChatGptEsSession": "batchgpt.providers.chatgpt_es.session",
}
__all__ = ["ChatGptEs", "ChatGptEsSession"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
