"""Tests of `batchgpt report`: totals equal the counts written, and the page renders offline.

`make_results` writes synthetic results files (native or OpenAI shape) and returns what they hold,
counted as they are written; tests/benchmarks/report_bench.py and docs/make_report_screenshot.py use
it too.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import run_cli

from batchgpt.report import (
    LATENCY_PRECISION,
    MAX_KINDS,
    OTHER_KIND,
    ReportDependencyError,
    ReportSummary,
    _Aggregate,
    _Source,
    _Timeline,
    write_report,
)

START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
#: Error kinds drawn for failed prompts, with the attempts each spends.
ERROR_ATTEMPTS = {"captcha": 1, "rate_limited": 6, "timeout": 6, "server_error": 6}
HOSTILE_MESSAGE = '<script>alert("x")</script> & </td>'
CAPTCHA_MESSAGE = "Du musst das Kästchen anklicken!"


@dataclass
class Expected:
    """What a generated file holds, counted while writing it."""

    records: int = 0
    ok: int = 0
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    untimed: int = 0
    unreadable: int = 0
    times: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def __iadd__(self, other: Expected) -> Expected:
        self.records += other.records
        self.ok += other.ok
        self.errors_by_kind += other.errors_by_kind
        self.retries += other.retries
        self.untimed += other.untimed
        self.unreadable += other.unreadable
        self.times += other.times
        self.latencies += other.latencies
        return self

    @property
    def wall_seconds(self) -> float | None:
        return max(self.times) - min(self.times) if self.times else None


def make_results(
    path: Path,
    count: int,
    *,
    shape: str = "native",
    seed: int = 0,
    first_line: int = 1,
    per_second: float = 4.0,
    error_rate: float = 0.12,
    response_chars: int = 80,
    blank_every: int = 0,
    torn: bool = False,
    hostile: bool = True,
) -> Expected:
    """Write `count` result records of `shape` to `path`; optionally blank lines and a torn tail.

    With `hostile`, captcha messages are HTML that a report must escape.
    """
    expected = Expected()
    rng = random.Random(seed)
    with path.open("wb") as out:
        for line in range(first_line, first_line + count):
            at = START + timedelta(seconds=(line - 1) / per_second + rng.random())
            captcha = HOSTILE_MESSAGE if hostile else CAPTCHA_MESSAGE
            record = _record(rng, expected, shape, line, at, error_rate, response_chars, captcha)
            out.write(orjson.dumps(record) + b"\n")
            if blank_every and line % blank_every == 0:
                out.write(b"   \n" if line % 2 else b"\n")
        if torn:
            out.write(b'{"id": "q-torn", "line": 99, "status": "o')
            expected.unreadable += 1
    return expected


def _record(
    rng: random.Random,
    expected: Expected,
    shape: str,
    line: int,
    at: datetime,
    error_rate: float,
    response_chars: int,
    captcha_message: str,
) -> dict[str, Any]:
    """One record; `expected` is updated with exactly what the record says."""
    expected.records += 1
    invalid = shape == "native" and line % 50 == 0
    kind = None
    if invalid:
        kind = "invalid_input"
    elif rng.random() < error_rate:
        kind = rng.choice(sorted(ERROR_ATTEMPTS))
    if kind is None:
        expected.ok += 1
    else:
        expected.errors_by_kind[kind] += 1
    message = captcha_message if kind == "captcha" else f"{kind} on line {line}"
    if shape == "openai":
        return _openai_record(rng, expected, line, at, kind, message, response_chars)

    attempts = 0 if invalid else ERROR_ATTEMPTS.get(kind or "", 1)
    if kind is None and rng.random() < 0.1:
        attempts += rng.randint(1, 3)
    expected.retries += max(attempts - 1, 0)
    record: dict[str, Any] = {
        "id": None if invalid else f"q{line}",
        "line": line,
        "status": "ok" if kind is None else "error",
        "model": None if invalid else "gpt-4o",
        "response": "x" * response_chars if kind is None else None,
        "attempts": attempts,
        "metadata": {"batch": "demo"},
    }
    if not invalid:
        latency = round(rng.lognormvariate(6.7, 0.6))
        record["latency_ms"] = latency
        expected.latencies.append(latency)
    if invalid or line % 97 == 0:
        expected.untimed += 1
    else:
        at = at.replace(microsecond=at.microsecond // 1000 * 1000)
        record["finished_at"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        expected.times.append(at.timestamp())
    if kind is not None:
        record["error"] = {
            "kind": kind,
            "message": message,
            "http_status": 200,
            "retryable": kind not in ("captcha", "invalid_input"),
        }
    return record


def _openai_record(
    rng: random.Random,
    expected: Expected,
    line: int,
    at: datetime,
    kind: str | None,
    message: str,
    response_chars: int,
) -> dict[str, Any]:
    request_id = f"req_{rng.getrandbits(64):016x}"
    record: dict[str, Any] = {
        "id": f"batch_req_{line}_{rng.getrandbits(48):012x}",
        "custom_id": f"q{line}",
        "response": None,
        "error": None,
    }
    if kind is None:
        created = int(at.timestamp())
        expected.times.append(created)
        record["response"] = {
            "status_code": 200,
            "request_id": request_id,
            "body": {
                "id": f"chatcmpl-{line}",
                "object": "chat.completion",
                "created": created,
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "x" * response_chars},
                        "finish_reason": "stop",
                    }
                ],
                "usage": None,
            },
        }
        return record
    expected.untimed += 1
    record["error"] = {"code": kind, "message": message}
    if line % 2:
        record["response"] = {
            "status_code": 403,
            "request_id": request_id,
            "body": {"error": {"message": message, "type": kind, "code": kind}},
        }
    return record


def assert_totals(summary: ReportSummary, expected: Expected) -> None:
    assert summary.records == expected.records
    assert summary.ok == expected.ok
    assert summary.errors_by_kind == dict(expected.errors_by_kind)
    assert summary.errors == expected.records - expected.ok
    assert summary.retries == expected.retries
    assert summary.untimed == expected.untimed
    assert summary.unreadable == expected.unreadable
    if expected.wall_seconds is None:
        assert summary.wall_seconds is None
    else:
        assert summary.wall_seconds == pytest.approx(expected.wall_seconds, abs=1e-3)
        timed = expected.records - expected.untimed
        assert summary.prompts_per_second == pytest.approx(timed / expected.wall_seconds)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


# --- totals -------------------------------------------------------------------------------------


def test_native_totals_equal_the_counts_in_the_file(tmp_path: Path) -> None:
    results = tmp_path / "prompts.results.jsonl"
    expected = make_results(results, 1200, blank_every=10, torn=True)
    assert expected.errors_by_kind["invalid_input"] == 24
    assert expected.retries > 0

    summary = write_report([results], tmp_path / "report.html")

    assert_totals(summary, expected)
    assert summary.p50_ms is not None


def test_openai_totals_equal_the_counts_in_the_file(tmp_path: Path) -> None:
    results = tmp_path / "batch_output.jsonl"
    expected = make_results(results, 800, shape="openai", seed=3, torn=True)

    summary = write_report([results], tmp_path / "report.html")

    assert_totals(summary, expected)
    assert summary.retries == 0
    assert summary.p50_ms is None


def test_shards_and_both_shapes_add_up(tmp_path: Path) -> None:
    expected = Expected()
    paths = []
    for index, shape in enumerate(("native", "native", "openai")):
        path = tmp_path / f"shard-{index}.results.jsonl"
        expected += make_results(path, 500, shape=shape, seed=index, first_line=1 + index * 500)
        paths.append(path)

    summary = write_report(paths, tmp_path / "report.html")

    assert_totals(summary, expected)


def test_percentiles_are_within_the_stated_precision(tmp_path: Path) -> None:
    results = tmp_path / "prompts.results.jsonl"
    expected = make_results(results, 3000, seed=7)

    summary = write_report([results], tmp_path / "report.html")

    for q, got in ((0.50, summary.p50_ms), (0.95, summary.p95_ms), (0.99, summary.p99_ms)):
        exact = nearest_rank(expected.latencies, q)
        assert got == pytest.approx(exact, rel=LATENCY_PRECISION + 1e-9)


def test_an_empty_file_gives_a_report_of_zeros(tmp_path: Path) -> None:
    results = tmp_path / "empty.results.jsonl"
    results.write_bytes(b"\n\n")
    out = tmp_path / "report.html"

    summary = write_report([results], out)

    assert summary == ReportSummary(0, 0, {}, 0, None, None, None, None, None)
    assert "No records to chart." in out.read_text()


def test_odd_values_are_tolerated_and_kinds_stay_bounded(tmp_path: Path) -> None:
    odd: list[dict[str, Any]] = [
        {"status": "error", "error": {"kind": f"kind-{index}"}} for index in range(MAX_KINDS + 5)
    ]
    odd += [
        {"status": "error", "error": {"kind": "<b>bold</b>", "message": None}, "id": {"a": 1}},
        {"status": "ok", "attempts": 1000, "latency_ms": 1e12, "finished_at": "9999-12-31T23:59"},
        {"status": "ok", "attempts": True, "latency_ms": -5, "finished_at": 1764061841},
        {"status": "ok", "attempts": "2", "latency_ms": "fast", "finished_at": "yesterday"},
        {"status": "ok", "finished_at": "2026-11-25T09:10:41"},
        {"custom_id": "x", "response": {"status_code": 200, "body": {"created": 1e300}}},
        {"custom_id": "y", "response": "not an object", "error": "not an object either"},
        {"neither": "shape"},
    ]
    results = tmp_path / "odd.results.jsonl"
    results.write_bytes(b"".join(orjson.dumps(obj) + b"\n" for obj in odd) + b"[1, 2]\n")
    out = tmp_path / "report.html"

    summary = write_report([results], out)

    assert summary.records == len(odd) - 1
    assert summary.unreadable == 2
    assert len(summary.errors_by_kind) == MAX_KINDS + 1
    assert summary.errors_by_kind[OTHER_KIND] == 7  # 5 kinds past the cap, <b>, unknown
    assert summary.untimed == summary.records - 1
    assert summary.p50_ms == 1e12
    page = out.read_text()
    assert "<b>bold</b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page


def test_timeline_stays_bounded_and_loses_nothing() -> None:
    timeline = _Timeline(max_buckets=100)
    start = START.timestamp()
    minutes = 10 * 24 * 60
    for minute in range(minutes):
        timeline.add(start + minute * 60, None if minute % 5 else "timeout")

    assert len(timeline.buckets) <= 100
    assert sum(bucket.total() for bucket in timeline.buckets.values()) == minutes
    width, starts, counts = timeline.series(max_points=50)
    assert len(starts) <= 52
    assert all(later - earlier == width for earlier, later in itertools.pairwise(starts))
    assert sum(bucket["timeout"] for bucket in counts) == minutes // 5


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.dictionaries(
                st.sampled_from(
                    [
                        "status",
                        "error",
                        "attempts",
                        "latency_ms",
                        "finished_at",
                        "custom_id",
                        "response",
                        "id",
                        "line",
                    ]
                ),
                st.recursive(
                    st.none()
                    | st.booleans()
                    | st.integers(-(2**63), 2**64 - 1)
                    | st.floats()
                    | st.text(max_size=30),
                    lambda inner: (
                        st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=3)
                    ),
                    max_leaves=8,
                ),
            ).map(orjson.dumps),
        ),
        max_size=20,
    )
)
def test_any_line_is_a_record_or_unreadable_never_a_crash(lines: list[bytes]) -> None:
    aggregate = _Aggregate()
    source = _Source("fuzz.jsonl")
    for raw in lines:
        for part in raw.split(b"\n"):
            if part.strip():
                aggregate.add_line(part, source)

    summary = aggregate.summary()
    nonblank = sum(1 for raw in lines for part in raw.split(b"\n") if part.strip())
    assert summary.records + summary.unreadable == nonblank
    assert summary.ok + summary.errors == summary.records


# --- page ---------------------------------------------------------------------------------------


def test_page_is_self_contained_and_escapes_what_it_quotes(tmp_path: Path) -> None:
    results = tmp_path / "prompts.results.jsonl"
    make_results(results, 600, seed=1)
    out = tmp_path / "report.html"

    write_report([results], out, rate=4, rerun_command="batchgpt run 'a&b.jsonl' --retry-errors")

    page = out.read_text()
    assert page.count("<script") - page.count("<script>") == 0, "no <script src=...>"
    assert "<link" not in page
    assert HOSTILE_MESSAGE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;/td&gt;" in page
    assert "batchgpt run &#x27;a&amp;b.jsonl&#x27; --retry-errors" in page
    assert page.count("Plotly.newPlot(") == 4


def test_without_a_rerun_command_the_page_shows_a_placeholder(tmp_path: Path) -> None:
    results = tmp_path / "prompts.results.jsonl"
    make_results(results, 60)
    out = tmp_path / "report.html"

    write_report([results], out)

    assert "batchgpt run &lt;INPUT&gt; --retry-errors" in out.read_text()


def test_missing_plotly_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name == "plotly" or name.startswith("plotly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)
    results = tmp_path / "prompts.results.jsonl"
    make_results(results, 5)
    out = tmp_path / "report.html"

    with pytest.raises(ReportDependencyError, match=r"pip install 'batchgpt\[report\]'"):
        write_report([results], out)
    assert not out.exists()


# --- in a real browser --------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_SCHEMES = ("file:", "about:", "data:", "blob:")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never `playwright install`: it would download)."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the test extra: playwright")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class OpenedPage:
    page: Any
    console_errors: list[str]
    blocked: list[str]


def open_offline(browser: Any, report: Path, **viewport: int) -> OpenedPage:
    """Open `report` with every non-local request aborted and recorded; wait for the charts."""
    context = browser.new_context(viewport=viewport or None)
    opened = OpenedPage(context.new_page(), [], [])

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith(LOCAL_SCHEMES):
            request_route.continue_()
        else:
            opened.blocked.append(url)
            request_route.abort()

    context.route("**/*", route)
    opened.page.on(
        "console",
        lambda message: message.type == "error" and opened.console_errors.append(message.text),
    )
    opened.page.on("pageerror", lambda error: opened.console_errors.append(str(error)))
    opened.page.goto(report.as_uri(), wait_until="load")
    opened.page.wait_for_function(
        "[...document.querySelectorAll('.plotly-graph-div')]"
        ".every(div => div.classList.contains('js-plotly-plot'))"
    )
    return opened


DRAWN_CHARTS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(div => ({
    id: div.id,
    traces: div.data.length,
    svg: div.querySelectorAll('svg.main-svg').length,
    drawn: div.querySelectorAll('g.trace').length,
    marks: div.querySelectorAll('g.trace g.point path, g.trace path.js-line').length,
}))"""


@pytest.mark.browser
def test_report_renders_offline_with_every_chart_and_the_right_totals(
    browser: Any, tmp_path: Path
) -> None:
    expected = Expected()
    native = tmp_path / "prompts.results.jsonl"
    openai = tmp_path / "batch_output.jsonl"
    expected += make_results(native, 900, blank_every=25, torn=True)
    expected += make_results(openai, 300, shape="openai", seed=5, first_line=901)
    report = tmp_path / "report.html"
    summary = write_report([native, openai], report, rate=4)
    assert_totals(summary, expected)

    opened = open_offline(browser, report)
    page = opened.page

    assert opened.blocked == []
    assert opened.console_errors == []
    charts = page.evaluate(DRAWN_CHARTS)
    assert [chart["id"] for chart in charts] == [
        "chart-throughput",
        "chart-latency",
        "chart-errors",
        "chart-attempts",
    ]
    for chart in charts:
        assert chart["svg"] > 0, chart
        assert chart["traces"] > 0 and chart["drawn"] >= chart["traces"], chart
        assert chart["marks"] > 0, chart

    assert "configured rate 4/s" in page.inner_text("#chart-throughput")

    def shown(element_id: str) -> int:
        return int(page.inner_text(f"#{element_id}").replace(",", ""))

    assert shown("total-records") == expected.records
    assert shown("total-ok") == expected.ok
    assert shown("total-errors") == expected.records - expected.ok
    assert shown("total-retries") == expected.retries
    assert shown("total-unreadable") == expected.unreadable == 1
    assert shown("total-untimed") == expected.untimed
    kinds = page.eval_on_selector_all(
        "#errors-by-kind li",
        "items => items.map(li => [li.dataset.kind, li.querySelector('.count').innerText])",
    )
    assert {kind: int(count) for kind, count in kinds} == dict(expected.errors_by_kind)
    rows = page.locator("#error-records tbody tr").count()
    assert rows == min(200, expected.records - expected.ok)
    assert HOSTILE_MESSAGE in page.inner_text("#error-records")
    assert page.inner_text("#rerun-command") == "batchgpt run <INPUT> --retry-errors"


@pytest.mark.browser
def test_the_offline_check_catches_a_page_that_fetches(browser: Any, tmp_path: Path) -> None:
    page = tmp_path / "fetches.html"
    page.write_text('<img src="https://example.com/pixel.png"><script src="http://cdn.test/x.js">')

    opened = open_offline(browser, page)

    assert sorted(opened.blocked) == ["http://cdn.test/x.js", "https://example.com/pixel.png"]


# --- through the command line -------------------------------------------------------------------


def report_cli(*args: str | Path) -> tuple[int, str]:
    done = run_cli("report", *args)
    return done.returncode, done.stderr


def test_report_of_a_job_file_reads_the_jobs_own_output(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    make_results(tmp_path / "state" / "answers.jsonl", 40)
    job = tmp_path / "nightly.toml"
    job.write_text('input = "prompts.jsonl"\noutput = "state/answers.jsonl"\n')
    out = tmp_path / "report.html"

    code, stderr = report_cli(job, "-o", out)

    assert code == 0, stderr
    assert "batchgpt report: answers.jsonl" in out.read_text()


def test_report_of_a_results_file_of_any_name(tmp_path: Path) -> None:
    make_results(tmp_path / "batch-output-host1.jsonl", 20, shape="openai")
    out = tmp_path / "report.html"

    code, stderr = report_cli(tmp_path / "batch-output-host1.jsonl", "-o", out)

    assert code == 0, stderr
    assert "batchgpt report: batch-output-host1.jsonl" in out.read_text()


def test_report_of_a_job_without_results_yet_is_exit_2_naming_the_file(tmp_path: Path) -> None:
    job = tmp_path / "nightly.toml"
    job.write_text('input = "prompts.jsonl"\noutput = "answers.jsonl"\n')

    code, stderr = report_cli(job, "-o", tmp_path / "report.html")

    assert code == 2
    assert str(tmp_path / "answers.jsonl") in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "report.html").exists()
