"""What a person watching the run sees: a tqdm bar on a terminal, a log line every few seconds
otherwise (cron, Kubernetes), and a summary at the end."""

from __future__ import annotations

import logging
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from batchgpt.formats import Result, token_counts

log = logging.getLogger("batchgpt")
LOG_EVERY_SECONDS = 10.0


@dataclass
class RunStats:
    """Counts of this run (what it wrote), plus what earlier runs had already done."""

    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: array[int] = field(default_factory=lambda: array("I"))
    retries: int = 0
    #: Tokens the answers' `usage` counted, and how many answers said.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0
    with_usage: int = 0
    previous_ok: int = 0
    previous_errors: Counter[str] = field(default_factory=Counter)
    #: Whether the earlier results were read (not when a stop came before recovery ended).
    previous_known: bool = False
    started: float = field(default_factory=time.monotonic)

    def add(self, result: Result) -> None:
        if result.error is None:
            self.ok += 1
        else:
            self.errors[result.error.kind] += 1
        if (counts := token_counts(result.usage)) is not None:
            self.with_usage += 1
            self.prompt_tokens += counts[0]
            self.completion_tokens += counts[1]
            self.tokens += counts[2]
        if result.attempts:
            self.latencies_ms.append(min(int(result.latency_ms or 0), 2**32 - 1))
            self.retries += result.attempts - 1

    @property
    def written(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def total_ok(self) -> int:
        return self.ok + self.previous_ok

    @property
    def total_errors(self) -> Counter[str]:
        return self.errors + self.previous_errors

    def counts(self) -> dict[str, Any]:
        """The checkpoint's counts: everything in the output so far."""
        return {"ok": self.total_ok, "errors": dict(self.total_errors)}

    def percentiles(self, *fractions: float) -> list[int | None]:
        """Latency percentiles, from one sort of the latencies."""
        ordered = sorted(self.latencies_ms)
        return [
            ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else None
            for fraction in fractions
        ]


class Progress:
    """Progress on stderr: a bar when `bar` is set, else a log line every `LOG_EVERY_SECONDS`
    of `clock` (the clock `stats.started` was read from)."""

    def __init__(
        self,
        stats: RunStats,
        *,
        total: int | None,
        bar: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.total = total
        self._clock = clock
        self._bar = (
            tqdm(total=total, unit="prompt", dynamic_ncols=True, smoothing=0.1) if bar else None
        )
        self._next_log = clock() + LOG_EVERY_SECONDS

    def update(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)
            self._bar.set_postfix(errors=sum(self.stats.errors.values()), refresh=False)
            return
        now = self._clock()
        if now >= self._next_log:
            self._next_log = now + LOG_EVERY_SECONDS
            counts = {"written": self.stats.written, "errors": sum(self.stats.errors.values())}
            log.info("progress %s", self.line(), extra={"fields": counts})

    def line(self) -> str:
        stats = self.stats
        elapsed = max(self._clock() - stats.started, 1e-9)
        rate = stats.written / elapsed
        text = f"{stats.written} written ({sum(stats.errors.values())} errors), {rate:.1f}/s"
        if self.total:
            remaining = max(self.total - stats.written, 0)
            eta = remaining / rate if rate else float("inf")
            text += f", ~{remaining} left, ETA {_duration(eta)}"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def summary_lines(
    stats: RunStats, output: str, *, clock: Callable[[], float] = time.monotonic
) -> list[tuple[str, dict[str, Any]]]:
    """The end-of-run summary: each line's text, and its numbers for a JSON log (`clock` is the
    one `stats.started` was read from)."""
    elapsed = clock() - stats.started
    errors = ", ".join(f"{kind} {count}" for kind, count in stats.total_errors.most_common())
    p50, p95 = stats.percentiles(0.50, 0.95)
    latency = f"p50 {p50} ms, p95 {p95} ms" if p50 is not None else "no requests"
    rate = stats.written / max(elapsed, 1e-9)
    this_run = {
        "summary": "this_run",
        "written": stats.written,
        "ok": stats.ok,
        "errors": dict(stats.errors),
        "seconds": round(elapsed, 3),
        "retries": stats.retries,
        "p50_ms": p50,
        "p95_ms": p95,
    }
    in_output = {
        "summary": "output",
        "ok": stats.total_ok if stats.previous_known else None,
        "errors": dict(stats.total_errors) if stats.previous_known else None,
        "output": output,
    }
    if not stats.previous_known:
        output_line = f"output: not read, the run stopped before it was recovered → {output}"
    else:
        output_line = (
            f"output: {stats.total_ok} ok, {sum(stats.total_errors.values())} errors"
            + (f" ({errors})" if errors else "")
            + f" → {output}"
        )
    lines: list[tuple[str, dict[str, Any]]] = [
        (
            f"this run: {stats.written} results ({stats.ok} ok) in {elapsed:.1f} s, "
            f"{rate:.1f} prompts/s, {stats.retries} retries, {latency}",
            this_run,
        )
    ]
    if stats.with_usage:
        per_second = stats.tokens / max(elapsed, 1e-9)
        per_prompt = stats.tokens / stats.with_usage
        tokens = {
            "summary": "tokens",
            "tokens": stats.tokens,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "tokens_per_second": round(per_second, 1),
            "tokens_per_prompt": round(per_prompt, 1),
        }
        lines.append(
            (
                f"tokens: {stats.tokens:,} ({stats.prompt_tokens:,} prompt + "
                f"{stats.completion_tokens:,} completion), {per_second:,.1f} tokens/s, "
                f"{per_prompt:,.1f} per prompt",
                tokens,
            )
        )
    lines.append((output_line, in_output))
    return lines
