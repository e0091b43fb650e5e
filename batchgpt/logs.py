"""Logging set-up: text for people, one JSON object per line for log collectors.

Nothing logged carries credentials: every message passes through `redact`.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

from batchgpt.redact import redact


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
        entry.update(getattr(record, "fields", {}))
        return orjson.dumps(entry).decode()


def setup_logging(log_format: str = "text", verbosity: int = 0) -> None:
    """Log to stderr: progress and summary by default, warnings only with -q, errors with -qq."""
    level = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}.get(
        max(-2, verbosity), logging.DEBUG
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if log_format == "json" else _RedactingFormatter("batchgpt: %(message)s")
    )
    root = logging.getLogger("batchgpt")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
