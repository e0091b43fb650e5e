"""The output shapes: one `OutputFormat` each, which writes a `Result` as a line and reads it back.

- `native`: batchgpt's own record (DESIGN.md "Output lines").
- `openai`: the OpenAI Batch API output line (`id`, `custom_id`, `response`, `error`), so files move
  between batchgpt, the OpenAI Batch API and `vllm run-batch`. The input line number travels in the
  request id (`batch_req_<line>_<hex>`): `request_id` writes it and `line_of_request_id` reads it.

`read_result` reads either shape leniently (a field of the wrong type reads as missing), as the
report needs for files of any origin; `decode_line` is the strict reading of our own files that
resume, merge and convert rely on. A new shape is one more class in `FORMATS`.
"""

from __future__ import annotations

import functools
import math
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import orjson

from batchgpt.errors import INVALID_INPUT, RETRYABLE_KINDS, CorruptOutputError

Id = str | int
#: Later times (or before 1970) are treated as missing: 2100-01-01.
_LATEST_TIME = 4_102_444_800.0
_REQUEST_ID = re.compile(r"batch_req_(\d+)_")


@dataclass(slots=True)
class ErrorInfo:
    kind: str
    message: str
    http_status: int | None = None
    retryable: bool = False


class _Error:
    """`ok`, `kind` and `retryable` of a record read as its `error` says."""

    __slots__ = ()
    error: ErrorInfo | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def kind(self) -> str | None:
        """The error kind, None for an answer."""
        return None if self.error is None else self.error.kind

    @property
    def retryable(self) -> bool:
        return self.error is not None and self.error.retryable


@dataclass(slots=True)
class Result(_Error):
    """The outcome of one input line, answer or error.

    Read back from a file, a field the shape does not carry is None (`attempts` of an OpenAI
    line), and `line` is None for a record that did not come from batchgpt."""

    id: Id | None
    line: int | None
    model: str | None
    response: str | None = None
    error: ErrorInfo | None = None
    attempts: int | None = 0
    latency_ms: float | None = 0
    metadata: dict[str, Any] | None = None
    finished_at: float | None = field(default_factory=time.time)
    usage: dict[str, int] | None = None
    #: The service's own chat-completion body, carried as it was into `openai` output.
    body: dict[str, Any] | None = None

    @classmethod
    def invalid(cls, record_id: Id | None, line: int, reason: str, model: str | None) -> Result:
        """The record of an input line that is never sent."""
        return cls(record_id, line, model, error=ErrorInfo(INVALID_INPUT, reason), attempts=0)


@dataclass(slots=True)
class Outcome(_Error):
    """What a resume needs of a result line, read without the rest: a resume reads every line of
    the output, so this is the cheap read (`OutputFormat.outcome`) of the same fields."""

    line: int | None
    id: Id | None
    error: ErrorInfo | None


class OutputFormat(ABC):
    """One output shape."""

    name: ClassVar[str]

    @abstractmethod
    def shape(self, result: Result) -> dict[str, Any]:
        """The JSON object of one result line."""

    @abstractmethod
    def read(self, obj: dict[str, Any]) -> Result | None:
        """A line of this shape read back (leniently); None when `obj` has another shape."""

    @abstractmethod
    def outcome(self, obj: dict[str, Any]) -> Outcome | None:
        """Only the line, id and error of a line of this shape (`read` builds on it)."""

    def encode(self, result: Result) -> bytes:
        """One output line, newline included."""
        return orjson.dumps(self.shape(result), option=orjson.OPT_APPEND_NEWLINE)


class NativeFormat(OutputFormat):
    name = "native"

    def shape(self, result: Result) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": result.id,
            "line": result.line,
            "status": "ok" if result.ok else "error",
            "model": result.model,
            "response": result.response,
            "attempts": result.attempts,
            "latency_ms": result.latency_ms,
            "finished_at": None if result.finished_at is None else iso_time(result.finished_at),
        }
        if result.error is not None:
            out["error"] = {
                "kind": result.error.kind,
                "message": result.error.message,
                "http_status": result.error.http_status,
                "retryable": result.error.retryable,
            }
        if result.usage is not None:
            out["usage"] = result.usage
        if result.metadata:
            out["metadata"] = result.metadata
        return out

    def read(self, obj: dict[str, Any]) -> Result | None:
        if (outcome := self.outcome(obj)) is None:
            return None
        response = obj.get("response")
        return Result(
            outcome.id,
            outcome.line,
            _text(obj.get("model")),
            response=response if isinstance(response, str) else None,
            error=outcome.error,
            attempts=_int(obj.get("attempts")),
            latency_ms=_number(obj.get("latency_ms")),
            metadata=obj.get("metadata") if isinstance(obj.get("metadata"), dict) else None,
            finished_at=_time(parse_timestamp(obj.get("finished_at"))),
            usage=obj.get("usage") if isinstance(obj.get("usage"), dict) else None,
        )

    def outcome(self, obj: dict[str, Any]) -> Outcome | None:
        if "status" not in obj:
            return None
        return Outcome(_line(obj.get("line")), _identifier(obj.get("id")), self._error(obj))

    @staticmethod
    def _error(obj: dict[str, Any]) -> ErrorInfo | None:
        if obj.get("status") == "ok":
            return None
        error = _dict(obj.get("error"))
        kind = _text(error.get("kind")) or "unknown"
        flag = error.get("retryable")
        return ErrorInfo(
            kind,
            _text(error.get("message")) or "",
            _int(error.get("http_status")),
            flag if isinstance(flag, bool) else kind in RETRYABLE_KINDS,
        )


class OpenAIBatchFormat(OutputFormat):
    """The OpenAI Batch API output line; an error is `"response": null` plus `error` (DESIGN.md:
    a response object, even with the site's HTTP 200 of a captcha, would tell OpenAI tooling the
    request succeeded)."""

    name = "openai"

    def shape(self, result: Result) -> dict[str, Any]:
        suffix = uuid.uuid4().hex[:16]
        out: dict[str, Any] = {
            "id": request_id(result.line or 0, suffix),
            "custom_id": None if result.id is None else str(result.id),
            "response": None,
            "error": None,
        }
        if result.error is not None:
            out["error"] = {"code": result.error.kind, "message": result.error.message}
            return out
        out["response"] = {
            "status_code": 200,
            "request_id": f"req_{suffix}",
            "body": result.body or self._completion(result, suffix),
        }
        return out

    @staticmethod
    def _completion(result: Result, suffix: str) -> dict[str, Any]:
        """A chat completion for an answer that came without one (chatgpt.es sends text)."""
        return {
            "id": f"chatcmpl-{suffix}",
            "object": "chat.completion",
            "created": int(result.finished_at or time.time()),
            "model": result.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.response},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": result.usage,
        }

    def read(self, obj: dict[str, Any]) -> Result | None:
        if (outcome := self.outcome(obj)) is None:
            return None
        body = _dict(_dict(obj.get("response")).get("body"))
        info = outcome.error
        usage = body.get("usage")
        return Result(
            outcome.id,
            outcome.line,
            _text(body.get("model")),
            response=None if info is not None else _content(body),
            error=info,
            attempts=None,
            latency_ms=None,
            finished_at=_time(_number(body.get("created"))),
            usage=usage if isinstance(usage, dict) else None,
            body=body if info is None and body else None,
        )

    def outcome(self, obj: dict[str, Any]) -> Outcome | None:
        if "custom_id" not in obj and "response" not in obj:
            return None
        return Outcome(
            line_of_request_id(obj.get("id")), _identifier(obj.get("custom_id")), self._error(obj)
        )

    @staticmethod
    def _error(obj: dict[str, Any]) -> ErrorInfo | None:
        response = _dict(obj.get("response"))
        body_error = _dict(_dict(response.get("body")).get("error"))
        status = _int(response.get("status_code"))
        answered = status is not None and 200 <= status < 300
        if obj.get("error") is None and answered and not body_error:
            return None
        error = _dict(obj.get("error"))
        kind = (
            _text(error.get("code"))
            or _text(body_error.get("code"))
            or _text(body_error.get("type"))
            or (f"http_{status}" if status is not None else "unknown")
        )
        message = _text(error.get("message")) or _text(body_error.get("message")) or ""
        return ErrorInfo(kind, message, status, kind in RETRYABLE_KINDS)


def token_counts(usage: dict[str, Any] | None) -> tuple[int, int, int] | None:
    """Prompt, completion and total tokens of a `usage` object (the total as the service sent
    it, else the sum); None when it counts no tokens."""
    if not usage:
        return None
    prompt, completion, total = (
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        usage.get("total_tokens"),
    )
    prompt = prompt if type(prompt) is int else None
    completion = completion if type(completion) is int else None
    total = total if type(total) is int else None
    if prompt is None and completion is None and total is None:
        return None
    prompt, completion = prompt or 0, completion or 0
    return prompt, completion, prompt + completion if total is None else total


FORMATS: dict[str, OutputFormat] = {f.name: f for f in (NativeFormat(), OpenAIBatchFormat())}


def encode(result: Result, output_format: str) -> bytes:
    """`result` as one line of `output_format`."""
    return FORMATS[output_format].encode(result)


def read_result(obj: object) -> Result | None:
    """A result line of any shape (lenient); None when `obj` is not a result record."""
    if not isinstance(obj, dict):
        return None
    for output_format in FORMATS.values():
        if (result := output_format.read(obj)) is not None:
            return result
    return None


def decode_line(raw: bytes) -> Result:
    """One line of a batchgpt output file; ValueError when it is not one of ours."""
    return _decode(raw, lambda shape, obj: shape.read(obj))


def decode_outcome(raw: bytes) -> Outcome:
    """What `decode_line` would find of the line, id and error, at a fraction of its cost."""
    return _decode(raw, lambda shape, obj: shape.outcome(obj))


_Read = TypeVar("_Read", Result, Outcome)


def _decode(raw: bytes, read: Callable[[OutputFormat, dict[str, Any]], _Read | None]) -> _Read:
    obj = orjson.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    for shape in FORMATS.values():
        if (record := read(shape, obj)) is not None:
            break
    else:
        raise ValueError("not a batchgpt result line")
    if record.line is None:
        raise ValueError("result line has no valid line number")
    return record


def request_id(line: int, suffix: str) -> str:
    """The OpenAI request id that carries the input line number."""
    return f"batch_req_{line}_{suffix}"


def line_of_request_id(value: object) -> int | None:
    """The input line number in a request id written by `request_id`, else None."""
    match = _REQUEST_ID.match(value) if isinstance(value, str) else None
    return _line(int(match.group(1))) if match else None


def iso_time(moment: float) -> str:
    """`moment` as UTC with milliseconds (truncated, as datetime's microseconds // 1000)."""
    second = math.floor(moment)
    micro = round((moment - second) * 1_000_000)
    if micro == 1_000_000:
        second, micro = second + 1, 0
    return _iso_second(second) + f"{micro // 1000:03d}Z"


@functools.lru_cache(maxsize=1)
def _iso_second(second: int) -> str:
    """The formatted second, cached: a run writes many results within each second."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def parse_timestamp(value: object) -> float | None:
    """A `finished_at` value as epoch seconds (UTC when it names no zone), or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        return None


def _content(body: dict[str, Any]) -> str | None:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    content = _dict(choices[0].get("message")).get("content")
    return content if isinstance(content, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _line(value: Any) -> int | None:
    line = _int(value)
    return line if line is not None and line >= 1 else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _time(seconds: float | None) -> float | None:
    return seconds if seconds is not None and 0 <= seconds < _LATEST_TIME else None


def _identifier(value: Any) -> Id | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def convert_file(source: Path, target: Path, output_format: str) -> int:
    """Rewrite every result of `source` in `output_format` into `target`."""
    count = 0
    with source.open("rb") as reader, target.open("wb") as writer:
        for number, raw in enumerate(reader, start=1):
            if not raw.strip():
                continue
            try:
                result = decode_line(raw)
            except ValueError as exc:
                raise CorruptOutputError(f"{source}:{number}: not a result line ({exc})") from exc
            writer.write(encode(result, output_format))
            count += 1
    return count
