"""What the runner knows of a chat service: a `Backend` that opens `ChatClient`s.

A backend is one module beside this one, registered by one line in `providers/__init__.py`: its
name for `--provider`, its models (None: any name the service knows), its own run options, and
`client(proxy)`, which opens one HTTP session through one proxy. The runner, the pool, the input
reader and the job files know nothing else of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from batchgpt.errors import ModelNotSupportedError

if TYPE_CHECKING:
    from batchgpt.config import Option, RunConfig
    from batchgpt.pacing import Pacer

Messages = list[dict[str, Any]]


@dataclass(slots=True)
class Answer:
    """One answer: its text, the tokens it cost when the service says, and the service's own
    chat-completion body when it sent one (carried into `--format openai` output as it was)."""

    text: str
    usage: dict[str, int] | None = None
    body: dict[str, Any] | None = None


class ChatClient(Protocol):
    """One HTTP session to a chat service, through one proxy (None: direct)."""

    proxy: str | None

    async def ask(
        self, messages: Messages, model: str, params: Mapping[str, Any] | None = None
    ) -> Answer:
        """The answer to `messages`, or a `ProviderError` saying why there is none."""
        ...

    async def close(self) -> None: ...


class Backend(ABC):
    """A kind of chat service; one instance per run opens that run's clients."""

    name: ClassVar[str]
    default_model: ClassVar[str]
    #: `--base-url` when none is given.
    default_base_url: ClassVar[str]
    #: The model names the service accepts; None when any name may be asked for.
    models: ClassVar[tuple[str, ...] | None] = None
    #: Whether the extra fields of an OpenAI request body (temperature, ...) reach the service.
    sends_params: ClassVar[bool] = False
    #: Run options only this backend has (`--chat`, `--tpm`, ...), declared like config's own.
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, config: RunConfig, pacer: Pacer | None) -> None:
        self.config = config
        self.pacer = pacer

    @classmethod
    def check_model(cls, model: str) -> str:
        """`model` if the service knows it; `ModelNotSupportedError` naming the known ones."""
        if cls.models is not None and model not in cls.models:
            raise ModelNotSupportedError(
                f"unknown model {model!r} (known: {', '.join(cls.models)})"
            )
        return model

    @abstractmethod
    def client(self, proxy: str | None, *, max_clients: int) -> ChatClient:
        """A new session through `proxy`, allowed `max_clients` connections at once."""

    async def preflight(self, client: ChatClient) -> None:
        """Check, before the run writes anything, what only the service can tell is a usage
        error (UsageError); `client` is the run's first. Nothing to check by default."""
        return None
