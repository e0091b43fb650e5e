"""Logging set-up: text for people, one JSON object per line for log collectors.

In JSON mode every line batchgpt writes to stderr is one object: its own log, other libraries'
warnings, Python's warnings, the summary (`announce`), and an uncaught exception with its
traceback. Nothing logged carries credentials: every message passes through `redact`.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

import orjson

from batchgpt.redact import redact

#: The environment variable that picks the log format, as --log-format does.
LOG_FORMAT_ENVVAR = "BATCHGPT_LOG_FORMAT"
LOG_FORMATS = ("text", "json")

log = logging.getLogger("batchgpt")


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": redact(record.getMessage()),
        }
        if record.name != log.name:
            entry["logger"] = record.name
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["traceback"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def setup_logging(log_format: str = "text", verbosity: int = 0) -> None:
    """Log to stderr: progress and summary by default, warnings only with -q, errors with -qq."""
    level = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}.get(
        max(-2, verbosity), logging.DEBUG
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if log_format == "json" else _RedactingFormatter("batchgpt: %(message)s")
    )
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # Other libraries' warnings and Python's warnings come out the same way.
    logging.captureWarnings(True)
    logging.root.handlers[:] = [handler]
    logging.root.setLevel(logging.WARNING)
    sys.excepthook = _log_uncaught if log_format == "json" else sys.__excepthook__


def is_json() -> bool:
    """Whether batchgpt logs JSON now."""
    return any(isinstance(handler.formatter, _JsonFormatter) for handler in log.handlers)


def announce(message: str, **fields: Any) -> None:
    """A line shown at every verbosity (the end-of-run summary), in the log format."""
    record = log.makeRecord(log.name, logging.INFO, "", 0, message, (), None)
    record.fields = fields
    for handler in log.handlers:
        handler.handle(record)
    if not log.handlers:
        print(f"batchgpt: {message}", file=sys.stderr)


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    log.critical("internal error: %s: %s", kind.__name__, error, exc_info=(kind, error, trace))
