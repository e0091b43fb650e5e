"""Input lines → `PromptRecord`s, and `Result`s → output lines (DESIGN.md "Input/Output lines").

A line is one JSON object in one of three shapes — `{"prompt": …}`, `{"messages": […]}` or an
OpenAI Batch API request — with an optional `id` (or `custom_id`) and `model`. Anything wrong
with a line is an `InvalidLine` carrying a one-line reason; it is never sent.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from batchgpt.errors import INVALID_INPUT, RETRYABLE_KINDS, CorruptOutputError
from batchgpt.providers.chatgpt_es import ChatGptEs, content_text

ROLES = frozenset({"system", "user", "assistant"})
CHAT_COMPLETIONS = "/v1/chat/completions"
FORMATS = ("native", "openai")
_ID_KEYS = ("id", "custom_id")
_NATIVE_KEYS = frozenset({"id", "custom_id", "prompt", "messages", "model"})
_BATCH_KEYS = frozenset({"custom_id", "method", "url", "body"})

Id = str | int


@dataclass(slots=True)
class PromptRecord:
    """One prompt ready to send."""

    id: Id
    line: int
    messages: list[dict[str, Any]]
    model: str
    metadata: dict[str, Any] | None = None
    ignored_params: tuple[str, ...] = ()


@dataclass(slots=True)
class InvalidLine:
    """A line that will not be sent; `id` is None when it has none of its own (or a duplicate)."""

    id: Id | None
    line: int
    reason: str
    model: str | None = None


class LineError(ValueError):
    """Why a line is invalid; caught by `parse_line`."""


def id_key(record_id: Id) -> int:
    """A stable 63-bit hash of an id's text (5 and "5" are one id, as in OpenAI's custom_id)."""
    digest = hashlib.blake2b(str(record_id).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) | 1


def _check_id(value: object) -> Id:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise LineError(f"id must be a string or an integer, not {_type_name(value)}")
    if isinstance(value, str) and not value.strip():
        raise LineError("id is empty")
    return value


def line_id(obj: dict[str, Any], line: int) -> Id:
    """The line's own id, or its line number."""
    for key in _ID_KEYS:
        if key in obj:
            return _check_id(obj[key])
    return line


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _check_model(value: object, default_model: str) -> str:
    if value is None:
        return default_model
    if not isinstance(value, str):
        raise LineError(f"model must be a string, not {_type_name(value)}")
    if value not in ChatGptEs.models:
        raise LineError(f"unknown model {value!r} (known: {', '.join(ChatGptEs.models)})")
    return value


def _check_content(content: object, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        if not content.strip():
            raise LineError(f"{where} content is empty")
        return content
    if not isinstance(content, list):
        raise LineError(f"{where} content must be a string or a list of parts")
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else _type_name(part)
            raise LineError(f"{where} has a {kind!s} part: only text parts can be sent")
        if not isinstance(part.get("text"), str):
            raise LineError(f"{where} has a text part without a string 'text'")
    if not content_text(content).strip():
        raise LineError(f"{where} content is empty")
    return content


def _check_messages(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise LineError(f"messages must be a list, not {_type_name(value)}")
    if not value:
        raise LineError("messages is empty")
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise LineError(f"{where} must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise LineError(f"{where} has unknown role {role!r} (use system, user or assistant)")
        _check_content(message.get("content"), where)
    return value


def _batch_request(
    obj: dict[str, Any], default_model: str
) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    if obj.get("method", "POST") != "POST":
        raise LineError(f"method must be POST, not {obj.get('method')!r}")
    if obj.get("url") != CHAT_COMPLETIONS:
        raise LineError(f"url {obj.get('url')!r} is not supported (only {CHAT_COMPLETIONS})")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise LineError(f"body must be an object, not {_type_name(body)}")
    messages = _check_messages(body.get("messages"))
    model = _check_model(body.get("model"), default_model)
    extra = {k: v for k, v in body.items() if k not in ("messages", "model")}
    return messages, model, extra


def parse_line(raw: bytes, line: int, default_model: str) -> PromptRecord | InvalidLine:
    """Turn one non-blank input line into a record, or say why it is invalid."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "invalid UTF-8" if "UTF-8" in str(exc) else f"not JSON ({str(exc).split(':')[0]})"
        return InvalidLine(None, line, reason)
    if not isinstance(obj, dict):
        return InvalidLine(None, line, f"not a JSON object but {_type_name(obj)}")
    try:
        record_id = line_id(obj, line)
    except LineError as exc:
        return InvalidLine(None, line, str(exc))
    try:
        return _record(obj, record_id, line, default_model)
    except LineError as exc:
        model = obj.get("model")
        return InvalidLine(record_id, line, str(exc), model if isinstance(model, str) else None)


def _record(obj: dict[str, Any], record_id: Id, line: int, default_model: str) -> PromptRecord:
    ignored: tuple[str, ...] = ()
    if "body" in obj or "url" in obj:
        messages, model, extra = _batch_request(obj, default_model)
        metadata = {k: v for k, v in obj.items() if k not in _BATCH_KEYS}
        if extra:
            metadata["body"] = extra
            ignored = tuple(extra)
    else:
        if "prompt" in obj and "messages" in obj:
            raise LineError("has both prompt and messages")
        if "prompt" in obj:
            prompt = obj["prompt"]
            if not isinstance(prompt, str):
                raise LineError(f"prompt must be a string, not {_type_name(prompt)}")
            if not prompt.strip():
                raise LineError("prompt is empty")
            messages = [{"role": "user", "content": prompt}]
        elif "messages" in obj:
            messages = _check_messages(obj["messages"])
        else:
            raise LineError("no prompt or messages")
        model = _check_model(obj.get("model"), default_model)
        metadata = {k: v for k, v in obj.items() if k not in _NATIVE_KEYS}
    return PromptRecord(record_id, line, messages, model, metadata or None, ignored)


# results ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ErrorInfo:
    kind: str
    message: str
    http_status: int | None = None
    retryable: bool = False


@dataclass(slots=True)
class Result:
    """The outcome of one input line, answer or error."""

    id: Id | None
    line: int
    model: str | None
    response: str | None = None
    error: ErrorInfo | None = None
    attempts: int = 0
    latency_ms: int = 0
    metadata: dict[str, Any] | None = None
    finished_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def invalid(cls, bad: InvalidLine) -> Result:
        return cls(bad.id, bad.line, bad.model, error=ErrorInfo(INVALID_INPUT, bad.reason))


def _iso(moment: float) -> str:
    stamp = datetime.fromtimestamp(moment, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _native(result: Result) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": result.id,
        "line": result.line,
        "status": "ok" if result.ok else "error",
        "model": result.model,
        "response": result.response,
        "attempts": result.attempts,
        "latency_ms": result.latency_ms,
        "finished_at": _iso(result.finished_at),
    }
    if result.error is not None:
        out["error"] = {
            "kind": result.error.kind,
            "message": result.error.message,
            "http_status": result.error.http_status,
            "retryable": result.error.retryable,
        }
    if result.metadata:
        out["metadata"] = result.metadata
    return out


def _openai(result: Result) -> dict[str, Any]:
    """The OpenAI Batch API output line; the request id carries the input line number."""
    suffix = uuid.uuid4().hex[:16]
    request_id = f"req_{suffix}"
    out: dict[str, Any] = {
        "id": f"batch_req_{result.line}_{suffix}",
        "custom_id": str(result.id) if result.id is not None else None,
        "response": None,
        "error": None,
    }
    if result.error is None:
        out["response"] = {
            "status_code": 200,
            "request_id": request_id,
            "body": {
                "id": f"chatcmpl-{suffix}",
                "object": "chat.completion",
                "created": int(result.finished_at),
                "model": result.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.response},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": None,
            },
        }
        return out
    # DESIGN.md: an error is `"response": null` plus `error`. A response here (even with the
    # site's HTTP 200 of a captcha) would tell OpenAI tooling the request succeeded.
    out["error"] = {"code": result.error.kind, "message": result.error.message}
    return out


def encode_result(result: Result, output_format: str) -> bytes:
    """One output line, newline included."""
    shape = _native(result) if output_format == "native" else _openai(result)
    return orjson.dumps(shape, option=orjson.OPT_APPEND_NEWLINE)


@dataclass(slots=True)
class RecordedResult:
    """What resume needs to know of an output line."""

    line: int
    id: Id | None
    ok: bool
    kind: str | None

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


def decode_result(raw: bytes) -> RecordedResult:
    """Read back an output line of either format; ValueError when it is not one of ours."""
    obj = orjson.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if "line" in obj and "status" in obj:
        line, record_id = obj["line"], obj.get("id")
        error = obj.get("error")
        kind = error.get("kind") if isinstance(error, dict) else None
        ok = obj["status"] == "ok"
    elif "custom_id" in obj and str(obj.get("id", "")).startswith("batch_req_"):
        line = int(str(obj["id"]).split("_")[2])
        record_id = obj["custom_id"]
        error = obj.get("error")
        kind = error.get("code") if isinstance(error, dict) else None
        ok = error is None
    else:
        raise ValueError("not a batchgpt result line")
    if not isinstance(line, int) or isinstance(line, bool) or line < 1:
        raise ValueError("result line has no valid line number")
    return RecordedResult(line, record_id, ok, kind)


def parse_timestamp(value: object) -> float | None:
    """A `finished_at` value as epoch seconds (UTC when it names no zone), or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        return None


def result_from_line(raw: bytes) -> Result:
    """A whole output line of either format read back as a `Result` (for `convert`)."""
    obj = orjson.loads(raw)
    recorded = decode_result(raw)
    if "status" in obj:
        error = obj.get("error")
        return Result(
            obj.get("id"),
            recorded.line,
            obj.get("model"),
            response=obj.get("response"),
            error=ErrorInfo(**error) if isinstance(error, dict) else None,
            attempts=obj.get("attempts", 0),
            latency_ms=obj.get("latency_ms", 0),
            metadata=obj.get("metadata"),
            finished_at=parse_timestamp(obj.get("finished_at")) or time.time(),
        )
    response = obj.get("response") or {}
    body = response.get("body") or {}
    error = obj.get("error")
    if isinstance(error, dict):
        kind = str(error.get("code"))
        info = ErrorInfo(
            kind, str(error.get("message")), response.get("status_code"), kind in RETRYABLE_KINDS
        )
        return Result(recorded.id, recorded.line, body.get("model"), error=info)
    return Result(
        recorded.id,
        recorded.line,
        body.get("model"),
        response=body["choices"][0]["message"]["content"],
        attempts=1,
        finished_at=float(body.get("created", time.time())),
    )


def convert_file(source: Path, target: Path, output_format: str) -> int:
    """Rewrite every result of `source` in `output_format` into `target`."""
    count = 0
    with source.open("rb") as reader, target.open("wb") as writer:
        for number, raw in enumerate(reader, start=1):
            if not raw.strip():
                continue
            try:
                result = result_from_line(raw)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise CorruptOutputError(f"{source}:{number}: not a result line ({exc})") from exc
            writer.write(encode_result(result, output_format))
            count += 1
    return count
