"""The chat services batchgpt can send prompts to, each a `Backend` (base.py) in its own module.

A new backend is its module plus one line in `BACKENDS`. Modules load on first use, so neither
`batchgpt --help` nor `import batchgpt.config` pulls in an HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchgpt.providers.base import Backend

#: `--provider` name → "module:class" of its backend.
BACKENDS: dict[str, str] = {
    "chatgpt-es": "batchgpt.providers.chatgpt_es.backend:ChatGptEsBackend",
    "openai": "batchgpt.providers.openai:OpenAIBackend",
}

_EXPORTS = {
    "ChatGptEs": "batchgpt.providers.chatgpt_es",
    "ChatGptEsSession": "batchgpt.providers.chatgpt_es",
}
__all__ = ["BACKENDS", "backend_class", "backend_classes", *_EXPORTS]


def backend_class(name: str) -> type[Backend]:
    """The backend registered as `name`."""
    module, _, attribute = BACKENDS[name].partition(":")
    backend: type[Backend] = getattr(importlib.import_module(module), attribute)
    return backend


def backend_classes() -> list[type[Backend]]:
    """Every registered backend, in registration order."""
    return [backend_class(name) for name in BACKENDS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'batchgpt.providers' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
