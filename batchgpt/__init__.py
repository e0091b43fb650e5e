"""batchgpt: answer every prompt in a JSONL file through chatgpt.es, crash-safe and resumable.

What a library user needs: the provider and its session, the runner entry point, the errors.
Names load on first use (PEP 562) so that `batchgpt --help` does not import the HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ChatGptEs": "batchgpt.providers.chatgpt_es",
    "ChatGptEsSession": "batchgpt.providers.chatgpt_es",
    "RunConfig": "batchgpt.config",
    "run": "batchgpt.runner",
    "BatchGptError": "batchgpt.errors",
    "JobError": "batchgpt.errors",
    "MissingRequirementsError": "batchgpt.errors",
    "ModelNotSupportedError": "batchgpt.errors",
    "ProviderError": "batchgpt.errors",
    "RetryableError": "batchgpt.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'batchgpt' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
