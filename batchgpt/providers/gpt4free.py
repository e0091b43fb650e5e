"""Provider base classes with gpt4free's interface, so `ChatGptEs` is a g4f provider without g4f.

g4f (8.8.6) duck-types providers: `g4f.ChatCompletion`, `g4f.client.Client`/`AsyncClient`,
`RetryProvider`, `IterListProvider` and g4f's API server call the class attributes and
classmethods below, named and shaped as in g4f's `BaseProvider`, `AsyncGeneratorProvider` and
`ProviderModelMixin`; none of them needs g4f to be installed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from batchgpt.errors import ModelNotSupportedError

Messages = list[dict[str, Any]]


class AsyncGeneratorProvider(ABC):
    """A provider whose answer arrives as an async generator of text pieces."""

    url: ClassVar[str]
    #: The name g4f shows for the provider; None: none.
    label: ClassVar[str | None] = None
    working: ClassVar[bool] = False
    #: False: g4f looks for no API key (`AuthManager.load_api_key`) and needs none.
    needs_auth: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = False
    supports_system_message: ClassVar[bool] = False
    supports_message_history: ClassVar[bool] = False
    #: g4f bounds each streamed piece by its `stream_timeout` (True) rather than `timeout`.
    use_stream_timeout: ClassVar[bool] = True
    #: g4f's health score: its client adds 1 after an answer and takes 1 after a failure.
    live: ClassVar[int] = 0

    @classmethod
    def get_dict(cls) -> dict[str, str | None]:
        """Name, URL and label: what g4f reports as the provider of an answer (`ProviderInfo`)."""
        return {"name": cls.__name__, "url": cls.url, "label": cls.label}

    @classmethod
    def get_parent(cls) -> str:
        """The family name g4f keys API keys and conversations by: `parent`, else the class's."""
        parent: str = getattr(cls, "parent", cls.__name__)
        return parent

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
    def get_models(cls, **kwargs: Any) -> list[str]:
        """The model names; g4f passes `api_key=` and other options, which change nothing here."""
        return list(cls.models)

    @classmethod
    def get_model(cls, model: str | None, **kwargs: Any) -> str:
        """The model to use for `model`, in g4f's order: empty or "auto" is the default, then an
        alias, then the name itself, then the first known name ending with `model`, case aside
        ("GPT-4O", "4o-mini"). An unknown name raises `ModelNotSupportedError`, where g4f's own
        base class would send it as it is."""
        if not model or model == "auto":
            return cls.default_model
        if model in cls.model_aliases:
            return cls.model_aliases[model]
        if model in cls.models:
            return model
        for known in cls.get_models(**kwargs):
            if known.lower().endswith(model.lower()):
                return known
        raise ModelNotSupportedError(
            f"Model is not supported: {model} in: {cls.__name__}"
            f" (use one of {', '.join(cls.models)})"
        )
