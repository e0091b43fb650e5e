"""Helpers for the tests of the `openai` backend: the OpenAI-compatible emulator as a fixture,
prompt files in the three input shapes, and the CLI command line for `--provider openai`.

Import `openai_emulator` into a test module to use the fixture (configure it with the
`openai_config(**settings)` marker, fields of `OpenAIEmulatorConfig`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import CLI

from batchgpt.emulator.openai import (
    OpenAIEmulator,
    OpenAIEmulatorConfig,
    OpenAIEmulatorStats,
    expected_chat_answer,
    running_openai_emulator,
)

KEY = "sk-test-0123456789abcdefSECRET"


@dataclass
class RunningOpenAIEmulator:
    emu: OpenAIEmulator
    #: The API root, what `--base-url` takes.
    url: str

    @property
    def config(self) -> OpenAIEmulatorConfig:
        return self.emu.config

    @property
    def stats(self) -> OpenAIEmulatorStats:
        return self.emu.stats

    def configure(self, **settings: Any) -> None:
        self.emu.config.update(settings)


@pytest.fixture
def openai_emulator(request: pytest.FixtureRequest) -> Iterator[RunningOpenAIEmulator]:
    """A fresh OpenAI-compatible emulator for one test, keeping every request body."""
    marker = request.node.get_closest_marker("openai_config")
    config = OpenAIEmulatorConfig(**(marker.kwargs if marker else {}))
    with running_openai_emulator(config, keep_bodies=True) as (emu, url):
        yield RunningOpenAIEmulator(emu, url)


def chat_prompts(count: int, *, tag: str = "c") -> list[dict[str, Any]]:
    """`count` distinct lines cycling through the three input shapes (system messages, history
    and body parameters included)."""
    lines: list[dict[str, Any]] = []
    for n in range(count):
        text = f"question {tag}{n}: what is {n} squared?"
        if n % 3 == 0:
            lines.append({"id": f"{tag}{n}", "prompt": text})
        elif n % 3 == 1:
            lines.append(
                {
                    "id": f"{tag}{n}",
                    "messages": [
                        {"role": "system", "content": f"Be brief ({n})."},
                        {"role": "user", "content": "Hello."},
                        {"role": "assistant", "content": "Hi! Ask away."},
                        {"role": "user", "content": text},
                    ],
                    "model": "local-model-b",
                }
            )
        else:
            lines.append(
                {
                    "custom_id": f"{tag}{n}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "local-model-c",
                        "messages": [{"role": "user", "content": text}],
                        "temperature": 0.25,
                        "seed": n,
                    },
                }
            )
    return lines


def messages_of(line: dict[str, Any]) -> list[dict[str, Any]]:
    if "prompt" in line:
        return [{"role": "user", "content": line["prompt"]}]
    return line["messages"] if "messages" in line else line["body"]["messages"]


def id_of(line: dict[str, Any]) -> str:
    return line.get("id", line.get("custom_id"))


def answers_by_id(lines: list[dict[str, Any]]) -> dict[str, str]:
    """The emulator's answer to every line, by id."""
    return {id_of(line): expected_chat_answer(messages_of(line)) for line in lines}


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def openai_run_args(input_path: Path, url: str, *extra: str) -> list[str]:
    """`batchgpt run INPUT --provider openai --base-url URL --no-progress EXTRA…`."""
    return [
        *CLI,
        "run",
        str(input_path),
        "--provider",
        "openai",
        "--base-url",
        url,
        "--no-progress",
        *extra,
    ]
