"""progress.py: the run's counts and latency percentiles, the end-of-run summary, and what a
person watching sees (a bar on a terminal, a log line every few seconds otherwise), on a fake
clock so every rate, duration and ETA is exact."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from fake_clock import FakeClock

from batchgpt.formats import ErrorInfo, Result
from batchgpt.progress import LOG_EVERY_SECONDS, Progress, RunStats, summary_lines


def answer(line: int, *, attempts: int = 1, latency_ms: int = 100) -> Result:
    return Result(
        f"q{line}", line, "gpt-4o", response="yes", attempts=attempts, latency_ms=latency_ms
    )


def failure(line: int, kind: str, *, attempts: int = 1, latency_ms: int = 100) -> Result:
    return Result(
        f"q{line}",
        line,
        "gpt-4o",
        error=ErrorInfo(kind, "failed"),
        attempts=attempts,
        latency_ms=latency_ms,
    )


# RunStats ---------------------------------------------------------------------------------------


def test_counts_add_this_run_to_what_earlier_runs_wrote() -> None:
    stats = RunStats(previous_ok=5, previous_errors=Counter({"captcha": 2}))
    stats.add(answer(1))
    stats.add(answer(2, attempts=3))
    stats.add(failure(3, "captcha"))
    stats.add(failure(4, "server_error", attempts=6))
    stats.add(Result.invalid(None, 5, "not JSON", None))

    assert stats.ok == 2
    assert stats.errors == {"captcha": 1, "server_error": 1, "invalid_input": 1}
    assert stats.written == 5
    assert stats.total_ok == 7
    assert stats.total_errors == {"captcha": 3, "server_error": 1, "invalid_input": 1}
    assert stats.counts() == {
        "ok": 7,
        "errors": {"captcha": 3, "server_error": 1, "invalid_input": 1},
    }
    assert stats.retries == 2 + 5  # attempts after the first; an unsent line has none
    assert list(stats.latencies_ms) == [100, 100, 100, 100]  # the unsent line took no time


def test_percentiles_come_from_the_sorted_latencies() -> None:
    stats = RunStats()
    for n, latency in enumerate(range(100, 0, -1), start=1):  # 100 ms … 1 ms, unsorted
        stats.add(answer(n, latency_ms=latency))
    assert stats.percentiles(0.0, 0.50, 0.95, 1.0) == [1, 51, 96, 100]


def test_percentiles_of_no_requests_are_none_and_huge_latencies_are_capped() -> None:
    stats = RunStats()
    assert stats.percentiles(0.5, 0.95) == [None, None]
    stats.add(answer(1, latency_ms=10**12))
    assert stats.percentiles(0.5) == [2**32 - 1]


# the summary ------------------------------------------------------------------------------------


def test_summary_lines_say_what_this_run_did_and_what_the_output_holds() -> None:
    clock = FakeClock()
    stats = RunStats(
        started=clock(),
        previous_ok=10,
        previous_errors=Counter({"captcha": 1}),
        previous_known=True,
    )
    for n in range(1, 19):
        stats.add(answer(n, latency_ms=10 * n, attempts=2 if n == 1 else 1))
    stats.add(failure(19, "server_error", latency_ms=500))
    stats.add(failure(20, "captcha"))
    clock.advance(8.0)

    (this_run, fields), (output, totals) = summary_lines(stats, "out.jsonl", clock=clock)
    assert this_run == (
        "this run: 20 results (18 ok) in 8.0 s, 2.5 prompts/s, 1 retries, p50 100 ms, p95 500 ms"
    )
    assert output == "output: 28 ok, 3 errors (captcha 2, server_error 1) → out.jsonl"
    assert fields == {
        "summary": "this_run",
        "written": 20,
        "ok": 18,
        "errors": {"server_error": 1, "captcha": 1},
        "seconds": 8.0,
        "retries": 1,
        "p50_ms": 100,
        "p95_ms": 500,
    }
    assert totals == {
        "summary": "output",
        "ok": 28,
        "errors": {"captcha": 2, "server_error": 1},
        "output": "out.jsonl",
    }


def test_a_summary_without_requests_says_so() -> None:
    clock = FakeClock()
    stats = RunStats(started=clock(), previous_known=True)
    stats.add(Result.invalid(None, 1, "not JSON", None))
    clock.advance(0.5)
    assert [text for text, _ in summary_lines(stats, "out.jsonl", clock=clock)] == [
        "this run: 1 results (0 ok) in 0.5 s, 2.0 prompts/s, 0 retries, no requests",
        "output: 0 ok, 1 errors (invalid_input 1) → out.jsonl",
    ]


# progress without a terminal --------------------------------------------------------------------


def progress_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("progress ")]


def test_without_a_terminal_a_log_line_comes_every_few_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    stats = RunStats(started=clock(), previous_known=True)
    progress = Progress(stats, total=100, bar=False, clock=clock)
    caplog.set_level(logging.INFO, logger="batchgpt")

    def write(count: int, seconds: float) -> None:
        for _ in range(count):
            clock.advance(seconds / count)
            line = stats.written + 1
            stats.add(failure(line, "captcha") if line == 1 else answer(line))
            progress.update(1)

    write(9, LOG_EVERY_SECONDS - 1)
    assert progress_lines(caplog) == []
    write(1, 1.0)  # 10 written after 10 s: 1.0/s, 90 left
    (first,) = progress_lines(caplog)
    assert first.getMessage() == "progress 10 written (1 errors), 1.0/s, ~90 left, ETA 1m30s"
    assert first.fields == {"written": 10, "errors": 1}  # type: ignore[attr-defined]
    write(30, LOG_EVERY_SECONDS - 0.5)  # not yet another 10 s
    assert len(progress_lines(caplog)) == 1
    write(10, 0.5)  # 50 written after 20 s: 2.5/s, 50 left → 20 s
    assert progress_lines(caplog)[-1].getMessage() == (
        "progress 50 written (1 errors), 2.5/s, ~50 left, ETA 0m20s"
    )
    assert len(progress_lines(caplog)) == 2


def test_the_line_without_a_total_or_a_rate_has_no_eta() -> None:
    clock = FakeClock()
    stats = RunStats(started=clock(), previous_known=True)
    assert Progress(stats, total=None, bar=False, clock=clock).line() == (
        "0 written (0 errors), 0.0/s"
    )
    assert Progress(stats, total=10, bar=False, clock=clock).line() == (
        "0 written (0 errors), 0.0/s, ~10 left, ETA ?"
    )
    stats.add(answer(1))
    clock.advance(2 * 3600.0)
    assert Progress(stats, total=3, bar=False, clock=clock).line() == (
        "1 written (0 errors), 0.0/s, ~2 left, ETA 4h00m"
    )


# progress on a terminal -------------------------------------------------------------------------


def test_on_a_terminal_a_bar_counts_instead_of_log_lines(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    stats = RunStats(started=clock(), previous_known=True)
    caplog.set_level(logging.INFO, logger="batchgpt")
    progress = Progress(stats, total=40, bar=True, clock=clock)
    for n in range(25):
        clock.advance(1.0)
        stats.add(answer(n))
        progress.update(1)
    progress.close()
    assert progress_lines(caplog) == []
    bar = capsys.readouterr().err
    assert "25/40" in bar and "prompt" in bar
