"""Provider base classes in the gpt4free spirit, so `ChatGptEs` drops into code written for it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from batchgpt.errors import ModelNotSupportedError

Messages = list[dict[str, Any]]


class AsyncGeneratorProvider(ABC):
    """A provider whose answer arrives as an async generator of text pieces."""

    url: ClassVar[str]
    working: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = False
    supports_system_message: ClassVar[bool] = False
    supports_message_history: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def create_async_generator(
        cls, model: str, messages: Messages, proxy: str | None = None, **kwargs: Any
    ) -> AsyncIterator[str]:
        """Yield the answer to `messages`."""

    @classmethod
    async def create_async(
        cls, model: str, messages: Messages, proxy: str | None = None, **kwargs: Any
    ) -> str:
        """The whole answer as one string."""
        return "".join(
            [piece async for piece in cls.create_async_generator(model, messages, proxy, **kwargs)]
        )


class ProviderModelMixin:
    """Model names a provider accepts, with gpt4free's `get_model` rules."""

    default_model: ClassVar[str]
    models: ClassVar[list[str]]
    model_aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def get_models(cls) -> list[str]:
        return list(cls.models)

    @classmethod
    def get_model(cls, model: str | None) -> str:
        """Empty means the default; an unknown name raises `ModelNotSupportedError`."""
        if not model:
            return cls.default_model
        if model in cls.models:
            return model
        if model in cls.model_aliases:
            return cls.model_aliases[model]
        raise ModelNotSupportedError(
            f"Model is not supported: {model} in: {cls.__name__}"
            f" (use one of {', '.join(cls.models)})"
        )
