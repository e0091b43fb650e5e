"""`batchgpt report`: one self-contained HTML page summarising one or more results files.

Two promises. Bounded memory: every file is read once, line by line, into aggregates of fixed size
(counters, time buckets that coarsen past a cap, a log-spaced latency histogram, the first
`ERROR_ROWS` error records), so a file of any length fits. Offline: the page inlines plotly.js once
and fetches nothing, so it opens from disk, as a mail attachment or on an air-gapped host.

Both result shapes are read, native and OpenAI batch output, mixed freely (shard outputs or a merged
file). Blank lines are skipped; a line that is not a result record (a torn last line, stray text) is
counted as unreadable. Records without a time count in the totals but not in the time charts.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from batchgpt.checkpoint import replace_atomically
from batchgpt.formats import Result, read_result, token_counts

#: Error records listed in the table; the rest are only counted.
ERROR_ROWS = 200
#: Occupied time buckets kept while streaming before the width steps up.
MAX_TIME_BUCKETS = 10_000
#: Most bars drawn on a time chart.
CHART_BUCKETS = 120
#: Distinct error kinds kept; later new kinds count as `OTHER_KIND`.
MAX_KINDS = 30
OTHER_KIND = "other"
#: Attempts at or above this share one bar.
MAX_ATTEMPTS_BAR = 20
MESSAGE_LIMIT = 500
KIND_LIMIT = 64
LATENCY_BUCKETS_PER_DECADE = 20
#: Relative error of a reported percentile: half a log bucket, 10^(1/40) - 1.
LATENCY_PRECISION = 10 ** (1 / (2 * LATENCY_BUCKETS_PER_DECADE)) - 1
PLACEHOLDER_INPUT = "<INPUT>"

_LATENCY_DECADES = 8  # 1 ms to 10^8 ms (28 h); slower results share the last bucket
_WIDTHS = (1, 2, 10, 20, 60, 120, 600, 1200, 3600, 7200, 21600, 43200, 86400)
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


class ReportDependencyError(Exception):
    """plotly, the optional extra that draws the charts, is not installed."""


@dataclass(frozen=True)
class ReportSummary:
    """The totals shown at the top of the report."""

    records: int
    ok: int
    errors_by_kind: dict[str, int]
    retries: int
    wall_seconds: float | None
    prompts_per_second: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    unreadable: int = 0
    untimed: int = 0
    retryable_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0
    #: Records whose `usage` counted tokens (the denominator of tokens per prompt).
    with_usage: int = 0

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens / self.wall_seconds if self.with_usage and self.wall_seconds else None

    @property
    def tokens_per_prompt(self) -> float | None:
        return self.tokens / self.with_usage if self.with_usage else None


def write_report(
    results: Sequence[Path],
    out: Path,
    *,
    rate: float | None = None,
    title: str | None = None,
    rerun_command: str | None = None,
) -> ReportSummary:
    """Read `results` in one streaming pass and write the HTML report to `out` atomically.

    `rate` (requests/s) is drawn as a line on the throughput chart (None or 0, unlimited: no line);
    `rerun_command` is shown as the way to rerun the error records (a placeholder when None).
    Raises ReportDependencyError before reading anything when plotly is missing, and OSError when
    a file cannot be read or written.
    """
    plotly = _import_plotly()
    paths = [Path(path) for path in results]
    aggregate = _Aggregate()
    for path in paths:
        aggregate.add_file(path)
    if title is None:
        names = ", ".join(path.name for path in paths[:3])
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        title = f"batchgpt report: {names}{more}"
    page = _render(aggregate, plotly, title=title, rate=rate, rerun_command=rerun_command)
    replace_atomically(Path(out), page.encode())
    return aggregate.summary()


def _import_plotly() -> ModuleType:
    try:
        import plotly.graph_objects
        import plotly.io
    except ImportError as exc:
        raise ReportDependencyError(
            "batchgpt report needs plotly to draw its charts: pip install 'batchgpt[report]'"
        ) from exc
    return plotly


# --- reading ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _ErrorRow:
    source: str
    line: int | None
    id: str | None
    kind: str
    message: str
    retryable: bool


@dataclass(slots=True)
class _Source:
    name: str
    records: int = 0
    unreadable: int = 0


# --- aggregating --------------------------------------------------------------------------------


def _next_width(width: int) -> int:
    """The next bucket width: 1 s, 2 s, 10 s, 20 s, 1 min, ... 1 day, then doubling; each one a
    multiple of the last, so buckets merge exactly."""
    return next((wider for wider in _WIDTHS if wider > width), width * 2)


class _Timeline:
    """Outcomes counted per time bucket (key None = answered, else the error kind).

    Buckets start 1 s wide; when more than `max_buckets` are occupied they merge into the next
    width, so memory stays bounded however long the run was.
    """

    def __init__(self, max_buckets: int = MAX_TIME_BUCKETS) -> None:
        self.max_buckets = max_buckets
        self.width = 1
        self.buckets: dict[int, Counter[str | None]] = {}
        self.first = math.inf
        self.last = -math.inf

    def add(self, at: float, kind: str | None) -> None:
        self.first = min(self.first, at)
        self.last = max(self.last, at)
        key = int(at // self.width) * self.width
        self.buckets.setdefault(key, Counter())[kind] += 1
        while len(self.buckets) > self.max_buckets:
            self.width = _next_width(self.width)
            self.buckets = self._merged(self.width)

    def _merged(self, width: int) -> dict[int, Counter[str | None]]:
        merged: dict[int, Counter[str | None]] = {}
        for key, counts in self.buckets.items():
            merged.setdefault(key // width * width, Counter()).update(counts)
        return merged

    def series(self, max_points: int) -> tuple[int, list[int], list[Counter[str | None]]]:
        """Bucket width, bucket starts and counts over the whole span, in at most about
        `max_points` buckets (empty buckets included, so gaps show)."""
        if not self.buckets:
            return self.width, [], []
        width = self.width
        while (self.last - self.first) / width > max_points:
            width = _next_width(width)
        merged = self._merged(width)
        starts = list(range(min(merged), max(merged) + width, width))
        return width, starts, [merged.get(start, Counter()) for start in starts]


class _LatencyHistogram:
    """Latencies in log-spaced buckets (LATENCY_BUCKETS_PER_DECADE from 1 ms), so a percentile is
    within LATENCY_PRECISION (about 6 %) of the exact one whatever the count."""

    def __init__(self) -> None:
        self.counts = [0] * (1 + _LATENCY_DECADES * LATENCY_BUCKETS_PER_DECADE)
        self.total = 0
        self.low = math.inf
        self.high = -math.inf

    def add(self, ms: float) -> None:
        index = 0 if ms < 1 else 1 + int(math.log10(ms) * LATENCY_BUCKETS_PER_DECADE)
        self.counts[min(index, len(self.counts) - 1)] += 1
        self.total += 1
        self.low = min(self.low, ms)
        self.high = max(self.high, ms)

    @staticmethod
    def edges(index: int) -> tuple[float, float]:
        """Lower and upper bound in ms of bucket `index` (bucket 0 holds 0 to 1 ms)."""
        if index == 0:
            return 0.0, 1.0
        per = LATENCY_BUCKETS_PER_DECADE
        return 10 ** ((index - 1) / per), 10 ** (index / per)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile, as its bucket's geometric middle within [min, max]."""
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                low, high = self.edges(index)
                middle = math.sqrt(low * high) if low else high / 2
                return min(max(middle, self.low), self.high)
        return self.high


class _Aggregate:
    """Running totals over every line read; its size does not grow with the number of lines."""

    def __init__(self) -> None:
        self.records = 0
        self.ok = 0
        self.unreadable = 0
        self.untimed = 0
        self.retries = 0
        self.retryable_errors = 0
        self.prompt_tokens = self.completion_tokens = self.tokens = self.with_usage = 0
        self.errors_by_kind: Counter[str] = Counter()
        self.attempts: Counter[int] = Counter()
        self.latency = _LatencyHistogram()
        self.timeline = _Timeline()
        self.error_rows: list[_ErrorRow] = []
        self.sources: list[_Source] = []

    def add_file(self, path: Path) -> None:
        source = _Source(path.name)
        self.sources.append(source)
        with path.open("rb") as lines:
            for raw in lines:
                if raw.strip():
                    self.add_line(raw, source)

    def add_line(self, raw: bytes, source: _Source) -> None:
        """Count one non-blank line of `source`."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        outcome = read_result(obj)
        if outcome is None:
            self.unreadable += 1
            source.unreadable += 1
            return
        source.records += 1
        self.add(outcome, source.name)

    def add(self, outcome: Result, source: str) -> None:
        self.records += 1
        kind = None
        if outcome.error is None:
            self.ok += 1
        else:
            error_kind = outcome.error.kind[:KIND_LIMIT]
            kind = self._kind(error_kind)
            self.errors_by_kind[kind] += 1
            self.retryable_errors += outcome.retryable
            if len(self.error_rows) < ERROR_ROWS:
                self.error_rows.append(
                    _ErrorRow(
                        source,
                        outcome.line,
                        None if outcome.id is None else str(outcome.id)[:200],
                        error_kind,
                        outcome.error.message[:MESSAGE_LIMIT],
                        outcome.retryable,
                    )
                )
        if (counts := token_counts(outcome.usage)) is not None:
            self.with_usage += 1
            self.prompt_tokens += counts[0]
            self.completion_tokens += counts[1]
            self.tokens += counts[2]
        attempts = outcome.attempts
        if attempts is not None and attempts >= 0:
            self.attempts[min(attempts, MAX_ATTEMPTS_BAR)] += 1
            self.retries += max(attempts - 1, 0)
        latency = outcome.latency_ms
        if latency is not None and latency >= 0 and attempts != 0:
            self.latency.add(latency)
        if outcome.finished_at is None:
            self.untimed += 1
        else:
            self.timeline.add(outcome.finished_at, kind)

    def _kind(self, kind: str) -> str:
        """`kind`, or OTHER_KIND once MAX_KINDS distinct kinds have been seen."""
        if kind in self.errors_by_kind or len(self.errors_by_kind) < MAX_KINDS:
            return kind
        return OTHER_KIND

    def summary(self) -> ReportSummary:
        timed = self.records - self.untimed
        wall = self.timeline.last - self.timeline.first if timed else None
        return ReportSummary(
            records=self.records,
            ok=self.ok,
            errors_by_kind=dict(self.errors_by_kind.most_common()),
            retries=self.retries,
            wall_seconds=wall,
            prompts_per_second=timed / wall if wall else None,
            p50_ms=self.latency.quantile(0.50),
            p95_ms=self.latency.quantile(0.95),
            p99_ms=self.latency.quantile(0.99),
            unreadable=self.unreadable,
            untimed=self.untimed,
            retryable_errors=self.retryable_errors,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            tokens=self.tokens,
            with_usage=self.with_usage,
        )


# --- rendering ----------------------------------------------------------------------------------


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0 auto; max-width: 1200px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.muted { color: #656d76; } code, pre { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; }
.totals { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px;
          margin: 16px 0; padding: 0; }
.totals div { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; }
.totals dt { color: #656d76; font-size: 12px; } .totals dd { margin: 0; font-size: 20px; }
.kinds { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 6px; }
.kinds li { background: #fff1f0; border: 1px solid #ffccc7; border-radius: 12px;
            padding: 1px 10px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
.chart { border: 1px solid #d0d7de; border-radius: 6px; padding: 4px; min-width: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #d0d7de; padding: 4px 8px; text-align: left;
         vertical-align: top; }
td.message { word-break: break-word; }
pre { background: #f6f8fa; padding: 10px 12px; border-radius: 6px; user-select: all;
      white-space: pre-wrap; }
"""


def _render(
    aggregate: _Aggregate,
    plotly: ModuleType,
    *,
    title: str,
    rate: float | None,
    rerun_command: str | None,
) -> str:
    """The whole page: header, charts (plotly.js inlined with the first one), error table."""
    summary = aggregate.summary()
    charts = _charts(aggregate, summary, plotly, rate)
    chart_html = "".join(f'<div class="chart">{chart}</div>' for chart in charts)
    if not charts:
        chart_html = '<p class="muted">No records to chart.</p>'
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="muted">Generated {generated} from {_sources_html(aggregate.sources)}.</p>
{_totals_html(summary)}
<h2>Charts</h2>
<div class="charts">{chart_html}</div>
{_errors_html(aggregate, summary, rerun_command)}
</body>
</html>
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _count(value: int) -> str:
    return f"{value:,}"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{seconds:.1f} s"


def _width_label(seconds: int) -> str:
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _sources_html(sources: list[_Source]) -> str:
    parts = []
    for source in sources:
        unreadable = f", {_count(source.unreadable)} unreadable" if source.unreadable else ""
        parts.append(
            f"<code>{_e(source.name)}</code> ({_count(source.records)} records{unreadable})"
        )
    return ", ".join(parts) or "no files"


def _totals_html(summary: ReportSummary) -> str:
    per_second = summary.prompts_per_second
    cells = [
        ("total-records", "prompts", _count(summary.records)),
        ("total-ok", "answered", _count(summary.ok)),
        ("total-errors", "error records", _count(summary.errors)),
        ("total-retryable", "retryable errors", _count(summary.retryable_errors)),
        ("total-retries", "retries spent", _count(summary.retries)),
        ("wall-time", "wall time", _duration(summary.wall_seconds)),
        ("prompts-per-second", "prompts/s", "–" if per_second is None else f"{per_second:,.2f}"),
        ("latency-p50", "p50 latency", _ms(summary.p50_ms)),
        ("latency-p95", "p95 latency", _ms(summary.p95_ms)),
        ("latency-p99", "p99 latency", _ms(summary.p99_ms)),
        ("total-unreadable", "unreadable lines", _count(summary.unreadable)),
        ("total-untimed", "records without time", _count(summary.untimed)),
    ]
    if summary.with_usage:
        per_second, per_prompt = summary.tokens_per_second, summary.tokens_per_prompt
        cells += [
            ("total-tokens", "tokens", _count(summary.tokens)),
            ("prompt-tokens", "prompt tokens", _count(summary.prompt_tokens)),
            ("completion-tokens", "completion tokens", _count(summary.completion_tokens)),
            ("tokens-per-second", "tokens/s", "–" if per_second is None else f"{per_second:,.1f}"),
            ("tokens-per-prompt", "tokens per prompt", f"{per_prompt or 0:,.1f}"),
        ]
    grid = "".join(
        f'<div><dt>{label}</dt><dd id="{key}">{value}</dd></div>' for key, label, value in cells
    )
    kinds = "".join(
        f'<li data-kind="{_e(kind)}"><span class="kind">{_e(kind)}</span> '
        f'<b class="count">{_count(count)}</b></li>'
        for kind, count in summary.errors_by_kind.items()
    )
    kinds_html = f'<ul class="kinds" id="errors-by-kind">{kinds}</ul>' if kinds else ""
    precision = round(LATENCY_PRECISION * 100)
    tokens = (
        "Tokens are summed from each record's <code>usage</code>, as the service counted them;"
        " tokens per prompt is over the records that carry one."
        if summary.with_usage
        else ""
    )
    return f"""<dl class="totals">{grid}</dl>
{kinds_html}
<p class="muted">Retries spent: attempts beyond the first, summed over native records (OpenAI-shape
records carry no attempts or latency). Wall time: last finished record minus first; prompts/s counts
the records that carry a time. Latency percentiles come from a log histogram with
{LATENCY_BUCKETS_PER_DECADE} buckets per decade: within ±{precision} % of the exact value.
Lines that are not a result record (for example a torn last line) are counted as unreadable.
{tokens}</p>"""


def _errors_html(aggregate: _Aggregate, summary: ReportSummary, rerun_command: str | None) -> str:
    if rerun_command is None:
        command = f"batchgpt run {PLACEHOLDER_INPUT} --retry-errors"
        note = (
            f"Replace <code>{_e(PLACEHOLDER_INPUT)}</code> with the prompt file or job file "
            "these results came from, and keep the options of the original run."
        )
    else:
        command, note = rerun_command, ""
    rows = "".join(
        "<tr>"
        f"<td>{_e(row.source)}</td><td>{'' if row.line is None else row.line}</td>"
        f"<td>{'' if row.id is None else _e(row.id)}</td><td>{_e(row.kind)}</td>"
        f"<td>{'yes' if row.retryable else 'no'}</td>"
        f'<td class="message">{_e(row.message)}</td>'
        "</tr>"
        for row in aggregate.error_rows
    )
    shown = len(aggregate.error_rows)
    if not shown:
        listing = "<p>No error records.</p>"
    else:
        more = f"the first {_count(shown)} of " if shown < summary.errors else ""
        listing = f"""<p class="muted">Showing {more}{_count(summary.errors)} error records.</p>
<table id="error-records">
<thead><tr><th>file</th><th>line</th><th>id</th><th>kind</th><th>retryable</th><th>message</th>
</tr></thead>
<tbody>{rows}</tbody>
</table>"""
    return f"""<h2>Error records</h2>
{listing}
<h2>Rerun the errors</h2>
<pre id="rerun-command">{_e(command)}</pre>
<p class="muted">{note} <code>--retry-errors</code> sends again the ids whose recorded error is
retryable ({_count(summary.retryable_errors)} here); final errors such as captcha or invalid
input stay as recorded.</p>"""


def _charts(
    aggregate: _Aggregate, summary: ReportSummary, plotly: ModuleType, rate: float | None
) -> list[str]:
    """Each chart as an HTML fragment; plotly.js is inlined in the first one only."""
    figures = []
    width, starts, counts = aggregate.timeline.series(CHART_BUCKETS)
    times = [datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S") for start in starts]
    if starts:
        figures.append(("chart-throughput", _throughput_figure(plotly, width, times, counts, rate)))
    if aggregate.latency.total:
        figures.append(("chart-latency", _latency_figure(plotly, aggregate.latency, summary)))
    if starts and any(kind is not None for bucket in counts for kind in bucket):
        figures.append(("chart-errors", _errors_figure(plotly, width, times, counts, summary)))
    if aggregate.attempts:
        figures.append(("chart-attempts", _attempts_figure(plotly, aggregate.attempts)))
    return [
        plotly.io.to_html(
            figure,
            full_html=False,
            include_plotlyjs=index == 0,
            div_id=div_id,
            config=_PLOTLY_CONFIG,
            default_height="360px",
        )
        for index, (div_id, figure) in enumerate(figures)
    ]


def _layout(title: str, x_title: str, y_title: str) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "template": "plotly_white",
        "margin": {"l": 60, "r": 20, "t": 80, "b": 50},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
        "barmode": "stack",
    }


def _throughput_figure(
    plotly: ModuleType,
    width: int,
    times: list[str],
    counts: list[Counter[str | None]],
    rate: float | None,
) -> Any:
    go = plotly.graph_objects
    answered = [bucket[None] / width for bucket in counts]
    failed = [(bucket.total() - bucket[None]) / width for bucket in counts]
    figure = go.Figure(
        [
            go.Bar(x=times, y=answered, name="answered", marker_color="#2da44e"),
            go.Bar(x=times, y=failed, name="error records", marker_color="#cf222e"),
        ],
        _layout(
            f"Completions per second ({_width_label(width)} buckets)",
            "time (UTC)",
            "records / s",
        ),
    )
    if rate:
        figure.add_hline(
            y=rate,
            line_dash="dash",
            line_color="#0969da",
            annotation_text=f"configured rate {rate:g}/s",
            annotation_position="top left",
        )
    return figure


def _latency_figure(
    plotly: ModuleType, histogram: _LatencyHistogram, summary: ReportSummary
) -> Any:
    go = plotly.graph_objects
    used = [index for index, count in enumerate(histogram.counts) if count]
    indexes = range(used[0], used[-1] + 1)
    xs = [max(histogram.edges(index)[0], 0.5) for index in indexes]
    ys = [histogram.counts[index] for index in indexes]
    xs.append(histogram.edges(used[-1])[1])
    ys.append(0)
    traces = [
        go.Scatter(
            x=xs,
            y=ys,
            name="records",
            mode="lines",
            line_shape="hv",
            fill="tozeroy",
            line_color="#8250df",
        )
    ]
    top = max(ys)
    for label, value in (("p50", summary.p50_ms), ("p95", summary.p95_ms), ("p99", summary.p99_ms)):
        if value is not None:
            traces.append(
                go.Scatter(x=[value, value], y=[0, top], mode="lines", name=f"{label} {_ms(value)}")
            )
    layout = _layout(
        "Latency per prompt (log buckets)", "latency (ms, log scale)", "records per bucket"
    )
    layout["xaxis"]["type"] = "log"
    return go.Figure(traces, layout)


def _errors_figure(
    plotly: ModuleType,
    width: int,
    times: list[str],
    counts: list[Counter[str | None]],
    summary: ReportSummary,
) -> Any:
    go = plotly.graph_objects
    traces = [
        go.Bar(x=times, y=[bucket[kind] for bucket in counts], name=kind)
        for kind in summary.errors_by_kind
        if any(bucket[kind] for bucket in counts)
    ]
    return go.Figure(
        traces,
        _layout(
            f"Error records by kind ({_width_label(width)} buckets)",
            "time (UTC)",
            "records per bucket",
        ),
    )


def _attempts_figure(plotly: ModuleType, attempts: Counter[int]) -> Any:
    go = plotly.graph_objects
    values = range(min(attempts), max(attempts) + 1)
    labels = []
    for value in values:
        if value == 0:
            labels.append("0 (not sent)")
        elif value == MAX_ATTEMPTS_BAR:
            labels.append(f"{value}+")
        else:
            labels.append(str(value))
    layout = _layout("Attempts per prompt", "attempts", "prompts")
    layout["xaxis"]["type"] = "category"
    return go.Figure(
        [go.Bar(x=labels, y=[attempts[value] for value in values], marker_color="#bf8700")],
        layout,
    )
