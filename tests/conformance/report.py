"""Per-release results: named checks that pass or fail, rendered as a text table or JSON.

A check is `ok=True` (holds), `ok=False` (fails: a line the maintainer must read) or `ok=None`
(informational: recorded, not judged). A release passes when none of its checks fails.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.conformance.probes import DiffLine


@dataclass
class Check:
    name: str
    ok: bool | None
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReleaseReport:
    release: str
    commit: str = ""
    generation_expected: str = ""
    generation_found: str = ""
    markup: str = ""
    checks: list[Check] = field(default_factory=list)
    bad_nonce: list[dict[str, Any]] = field(default_factory=list)
    emulator_note: str = ""
    emulator_ran: bool = False
    diff: list[DiffLine] = field(default_factory=list)
    experiments: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, name: str, ok: bool | None, summary: str, **details: Any) -> Check:
        check = Check(name, ok, summary, details)
        self.checks.append(check)
        return check

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def passed(self) -> bool:
        return not self.errors and all(c.ok is not False for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["diff"] = [asdict(line) | {"ok": line.ok} for line in self.diff]
        return data


def _cell(report: ReleaseReport, name: str) -> str:
    check = report.check(name)
    if check is None:
        return "-"
    mark = {True: "ok", False: "FAIL", None: "info"}[check.ok]
    return f"{mark}: {check.summary}"


COLUMNS = (
    ("generation", "page generation"),
    ("answers", "answers correct"),
    ("upstream", "upstream framing"),
    ("req/prompt", "requests per prompt"),
    ("nonce expiry", "nonce expiry"),
    ("emulator diff", "emulator diff"),
)


def render_table(reports: list[ReleaseReport]) -> str:
    """One summary row per release, then each release's checks, bad-nonce answers and diff."""
    header = ["release", *(title for title, _ in COLUMNS), "time"]
    rows = [
        [r.release, *(_cell(r, name) for _, name in COLUMNS), f"{r.seconds:.0f} s"] for r in reports
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, ["-" * w for w in widths], *rows]
    ]
    for report in reports:
        lines += [
            "",
            f"== {report.release} ({report.commit[:10] or 'no commit'}): "
            f"{'PASS' if report.passed else 'FAIL'}, {report.seconds:.0f} s",
        ]
        lines.append(f"   page: {report.markup or '-'}")
        lines += [f"   [FAIL] error: {error}" for error in report.errors]
        for check in report.checks:
            mark = {True: "ok  ", False: "FAIL", None: "info"}[check.ok]
            lines.append(f"   [{mark}] {check.name}: {check.summary}")
        for answer in report.bad_nonce:
            lines.append(
                f"   bad nonce, {answer['request']}: {answer['status']} {answer['content_type']}"
                f" {answer['body']!r}"
            )
        if report.emulator_note:
            lines.append(f"   emulator: {report.emulator_note}")
        if not report.emulator_ran:
            lines.append("   the plugin's shapes (no emulator to compare with):")
            lines += [f"     {line.probe}.{line.field}: {line.plugin}" for line in report.diff]
            continue
        failed = [line for line in report.diff if not line.ok]
        lines.append(
            f"   emulator diff: {len(report.diff) - len(failed)}/{len(report.diff)} lines equal"
        )
        for line in failed:
            lines.append(f"   [FAIL] {line.probe}.{line.field}: plugin {line.plugin!r}")
            lines.append(
                f"          {' ' * len(line.probe + line.field)}  emulator {line.emulator!r}"
            )
    return "\n".join(lines)


def render_json(reports: list[ReleaseReport]) -> str:
    return json.dumps([r.as_dict() for r in reports], indent=2, ensure_ascii=False, default=str)
