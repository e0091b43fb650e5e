"""`batchgpt validate`: every line checked as a run would read it, nothing sent."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from batchgpt.config import RunConfig
from batchgpt.errors import UsageError
from batchgpt.inputs import IdIndex, read_prompts
from batchgpt.providers import backend_class
from batchgpt.records import InvalidLine

#: Problems kept for --json; every problem is still counted.
KEEP_PROBLEMS = 1000
_DETAILS = re.compile(r"\[\d+\]|'[^']*'|\"[^\"]*\"|\([^)]*\)|\d+")


def reason_category(reason: str) -> str:
    """A reason without its particulars, for counting ("unknown model 'x'" → "unknown model")."""
    return " ".join(_DETAILS.sub("", reason).split())


@dataclass
class ValidationReport:
    path: Path
    valid: int = 0
    problems: list[InvalidLine] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)

    @property
    def invalid(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        text = f"{self.path}: {self.valid} valid, {self.invalid} invalid"
        if self.reasons:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common()) + ")"
        models = ", ".join(f"{m} {n}" for m, n in self.models.most_common())
        return text + (f"; models: {models}" if models else "")

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "path": str(self.path),
                "valid": self.valid,
                "invalid": self.invalid,
                "reasons": dict(self.reasons),
                "models": dict(self.models),
                "problems": [
                    {"line": p.line, "id": p.id, "reason": p.reason} for p in self.problems
                ],
                "problems_truncated": self.invalid > len(self.problems),
            },
            option=orjson.OPT_INDENT_2,
        ).decode()


def validate_file(
    config: RunConfig, *, on_problem: Callable[[InvalidLine], None] | None = None
) -> ValidationReport:
    """Read the input as `batchgpt run` would with `config`, and count what it finds;
    `on_problem` sees each bad line as it is found."""
    path = config.input
    if not path.is_file():
        raise UsageError(f"cannot read input {path}: no such file")
    report = ValidationReport(path)
    for item in read_prompts(
        path,
        default_model=config.model,
        check_model=backend_class(config.provider).check_model,
        seen=IdIndex(),
        max_line_bytes=config.max_line_bytes,
    ):
        if isinstance(item, InvalidLine):
            report.reasons[reason_category(item.reason)] += 1
            if on_problem is not None:
                on_problem(item)
            if len(report.problems) < KEEP_PROBLEMS:
                report.problems.append(item)
        else:
            report.valid += 1
            report.models[item.model] += 1
    return report
