"""Helpers for end-to-end tests: write prompt files, run the real CLI in a subprocess, read results.

The CLI runs as `python -m batchgpt` in a child process and talks over loopback HTTP to the
emulator served from a thread of the pytest process, so the emulator's counters see every request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from batchgpt.providers.chatgpt_es import ChatGptEs

#: Every CLI run in a test must end well within this.
CLI_TIMEOUT = 90.0


def write_jsonl(path: Path, lines: Iterable[dict[str, Any] | str | bytes]) -> Path:
    """Write objects as JSON lines; str/bytes items are written as they are (plus a newline)."""
    with path.open("wb") as stream:
        for line in lines:
            if isinstance(line, dict):
                stream.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
            elif isinstance(line, str):
                stream.write(line.encode() + b"\n")
            else:
                stream.write(line + b"\n")
    return path


def run_cli(*args: str | Path, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`python -m batchgpt ARGS` in a child process; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "batchgpt", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_job(
    input_path: Path, url: str, *options: str | Path, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """`batchgpt run INPUT --base-url URL --no-progress OPTIONS`."""
    return run_cli("run", input_path, "--base-url", url, "--no-progress", *options, timeout=timeout)


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file as an object (each line must be complete JSON)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def input_messages(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages an input line of any shape asks about."""
    if "prompt" in obj:
        return [{"role": "user", "content": obj["prompt"]}]
    if "messages" in obj:
        return obj["messages"]
    return obj["body"]["messages"]


def sent_message(obj: dict[str, Any]) -> str:
    """The `message` form field the client must send for an input line."""
    return ChatGptEs.format_message(input_messages(obj))


def mixed_prompts(count: int, *, tag: str = "p") -> list[dict[str, Any]]:
    """`count` distinct prompts cycling through the three input shapes."""
    lines: list[dict[str, Any]] = []
    for n in range(count):
        text = f"question {tag}{n}: what is {n} squared?"
        shape = n % 3
        if shape == 0:
            lines.append({"id": f"{tag}{n}", "prompt": text})
        elif shape == 1:
            lines.append(
                {
                    "id": f"{tag}{n}",
                    "messages": [
                        {"role": "system", "content": f"Be brief ({n})."},
                        {"role": "user", "content": text},
                    ],
                    "model": "gpt-4o-mini",
                }
            )
        else:
            lines.append(
                {
                    "custom_id": f"{tag}{n}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4", "messages": [{"role": "user", "content": text}]},
                }
            )
    return lines


def line_id(obj: dict[str, Any], line: int) -> Any:
    """The id a run gives an input line."""
    return obj.get("id", obj.get("custom_id", line))


class RequestSampler:
    """Samples the emulator's request count (GETs + POSTs) every `interval` seconds in a thread."""

    def __init__(self, stats_of: Any, interval: float = 0.05) -> None:
        self._stats_of = stats_of
        self._interval = interval
        self._done = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            stats = self._stats_of()
            self.samples.append((time.monotonic(), stats.gets + stats.posts))
            self._done.wait(self._interval)

    def __enter__(self) -> RequestSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(5)

    def count_at(self, moment: float) -> int:
        """Requests seen by `moment` (the last sample taken at or before it)."""
        seen = 0
        for at, count in self.samples:
            if at > moment:
                break
            seen = count
        return seen

    def first_request_at(self) -> float:
        return next(at for at, count in self.samples if count > 0)
