"""`RunConfig`: every option of a run as one plain value, whatever it came from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgpt.errors import UsageError
from batchgpt.inputs import DEFAULT_MAX_LINE_BYTES, Shard
from batchgpt.redact import redact

DEFAULT_BASE_URL = "https://chatgpt.es"
_PERIODS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([a-z]+))?\s*")


def parse_rate(text: str | float | int) -> float:
    """Requests per second from `2`, `2/s`, `120/min`, `5000/h`; 0 means unlimited."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value, period = float(text), "s"
    else:
        match = _RATE.fullmatch(str(text).lower())
        if not match or (match[2] or "s") not in _PERIODS:
            raise UsageError(
                f"--rate {text!r}: use a number per s, min or h, like 2, 120/min, 5000/h"
            )
        value, period = float(match[1]), match[2] or "s"
    if value < 0:
        raise UsageError(f"--rate {text!r} must not be negative")
    return value / _PERIODS[period]


def default_output(input_path: Path, shard: Shard | None) -> Path:
    """prompts.jsonl → prompts.results.jsonl (prompts.shard-1-of-3.results.jsonl for a shard)."""
    stem = input_path.name.removesuffix(".jsonl")
    if shard is not None:
        stem += f".shard-{shard.index}-of-{shard.count}"
    return input_path.with_name(stem + ".results.jsonl")


@dataclass
class RunConfig:
    input: Path
    output: Path
    checkpoint: Path
    base_url: str = DEFAULT_BASE_URL
    model: str = "gpt-4o"
    concurrency: int = 4
    rate: float = 0.0
    sessions: int = 4
    proxies: list[str] = field(default_factory=list)
    retries: int = 5
    give_up_after: float = 300.0
    timeout: float = 120.0
    shard: Shard | None = None
    retry_errors: bool = False
    restart: bool = False
    repair: bool = False
    output_format: str = "native"
    progress: bool = True
    drain_timeout: float = 20.0
    sync_lines: int = 512
    sync_seconds: float = 1.0
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    report: Path | None = None

    @property
    def lock_path(self) -> Path:
        return self.output.with_name(self.output.name + ".lock")

    def result_options(self) -> dict[str, Any]:
        """The options that shape results: a resume must use the same ones."""
        return {
            "model": self.model,
            "format": self.output_format,
            "shard": str(self.shard) if self.shard else None,
            "max_line_bytes": self.max_line_bytes,
        }

    def public(self) -> dict[str, Any]:
        """The resolved options for people and logs, credentials redacted."""
        return {
            "input": str(self.input),
            "output": str(self.output),
            "checkpoint": str(self.checkpoint),
            "base_url": redact(self.base_url),
            "model": self.model,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "sessions": self.sessions,
            "proxies": [redact(proxy) for proxy in self.proxies],
            "retries": self.retries,
            "give_up_after": self.give_up_after,
            "timeout": self.timeout,
            "shard": str(self.shard) if self.shard else None,
            "retry_errors": self.retry_errors,
            "format": self.output_format,
            "drain_timeout": self.drain_timeout,
            "max_line_bytes": self.max_line_bytes,
            "sync_lines": self.sync_lines,
            "sync_seconds": self.sync_seconds,
            "report": str(self.report) if self.report else None,
        }
