"""Shared fixtures: a real emulator on a loopback port for every test, and helpers to reach it.

Tests that touch HTTP talk to the emulator with the real curl_cffi client; nothing is mocked.
`async def` tests run on a fresh event loop each (see `pytest_pyfunc_call`), so no plugin is needed.

Configure the emulator with markers (a test's own settings win over its module's), or change
`emulator.config` in the test; run a test against both chat generations with
`support.BOTH_CHATS` (an indirect parameter of this fixture)::

    pytestmark = pytest.mark.emulator_config(chat="legacy")

    @pytest.mark.emulator_config(stream=True, latency=0.1)
    async def test_something(emulator): ...

    @BOTH_CHATS
    def test_on_both(emulator): ...
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchgpt.emulator import AJAX_PATH, Emulator, EmulatorConfig, EmulatorStats, running_emulator
from batchgpt.providers import ChatGptEs, ChatGptEsSession


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "emulator_config(**settings): EmulatorConfig fields for the `emulator` fixture"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests with `asyncio.run`, each on its own event loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = inspect.signature(pyfuncitem.obj).parameters
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


def local_provider(base_url: str) -> type[ChatGptEs]:
    """`ChatGptEs` pointed at `base_url` instead of https://chatgpt.es, as a subclass."""

    class LocalChatGptEs(ChatGptEs):
        url = base_url
        api_endpoint = base_url + AJAX_PATH

    return LocalChatGptEs


@dataclass
class RunningEmulator:
    """An emulator serving on loopback: `emu` is the `Emulator`, `url` its base URL."""

    emu: Emulator
    url: str

    @property
    def config(self) -> EmulatorConfig:
        return self.emu.config

    @property
    def stats(self) -> EmulatorStats:
        return self.emu.stats

    @property
    def provider(self) -> type[ChatGptEs]:
        """A `ChatGptEs` subclass that talks to this emulator."""
        return local_provider(self.url)

    def session(self, **kwargs: Any) -> ChatGptEsSession:
        """A `ChatGptEsSession` on this emulator (keyword arguments as for the class)."""
        return ChatGptEsSession(self.url, **kwargs)

    def configure(self, **settings: Any) -> None:
        """Change emulator settings while it runs (names as in `EmulatorConfig`)."""
        self.emu.config.update(settings)


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[RunningEmulator]:
    """A fresh emulator for one test, recording every form and header it receives."""
    settings: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("emulator_config"))):
        settings.update(marker.kwargs)  # iter_markers yields the closest first
    if hasattr(request, "param"):
        settings["chat"] = request.param
    config = EmulatorConfig(**settings)
    with running_emulator(config, keep_forms=True) as (emu, url):
        yield RunningEmulator(emu, url)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """A fresh temporary directory (short alias of `tmp_path`)."""
    return tmp_path
