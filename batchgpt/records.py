"""Input lines → `PromptRecord`s (DESIGN.md "Input lines").

A line is one JSON object in one of three shapes — `{"prompt": …}`, `{"messages": […]}` or an
OpenAI Batch API request — with an optional `id` (or `custom_id`) and `model`. Anything wrong
with a line is an `InvalidLine` carrying a one-line reason; it is never sent. Models are checked
by the backend's own `check_model`, the same call `run` makes for `--model`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from batchgpt.errors import ModelNotSupportedError
from batchgpt.formats import Id, Result

ROLES = frozenset({"system", "user", "assistant"})
CHAT_COMPLETIONS = "/v1/chat/completions"
_ID_KEYS = ("id", "custom_id")
_NATIVE_KEYS = frozenset({"id", "custom_id", "prompt", "messages", "model"})
_BATCH_KEYS = frozenset({"custom_id", "method", "url", "body"})

#: A backend's model check: the name if the service knows it, else ModelNotSupportedError.
ModelCheck = Callable[[str], str]


@dataclass(slots=True)
class PromptRecord:
    """One prompt ready to send; `params` are the other fields of an OpenAI request body."""

    id: Id
    line: int
    messages: list[dict[str, Any]]
    model: str
    metadata: dict[str, Any] | None = None
    params: dict[str, Any] | None = None


@dataclass(slots=True)
class InvalidLine:
    """A line that will not be sent; `id` is None when it has none of its own (or a duplicate)."""

    id: Id | None
    line: int
    reason: str
    model: str | None = None

    def result(self) -> Result:
        return Result.invalid(self.id, self.line, self.reason, self.model)


class LineError(ValueError):
    """Why a line is invalid; caught by `parse_line`."""


def id_key(record_id: Id) -> int:
    """A 63-bit hash of an id's text, the same in every process, so shards agree on who owns an
    id (5 and "5" are one id, as in OpenAI's custom_id)."""
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


def content_text(content: str | list[dict[str, Any]]) -> str:
    """A message's content as text: a string, or the text parts of a list joined."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")


def _check_model(value: object, default_model: str, check_model: ModelCheck) -> str:
    if value is None:
        return default_model
    if not isinstance(value, str):
        raise LineError(f"model must be a string, not {_type_name(value)}")
    try:
        return check_model(value)
    except ModelNotSupportedError as exc:
        raise LineError(exc.message) from None


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
    obj: dict[str, Any], default_model: str, check_model: ModelCheck
) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    if obj.get("method", "POST") != "POST":
        raise LineError(f"method must be POST, not {obj.get('method')!r}")
    if obj.get("url") != CHAT_COMPLETIONS:
        raise LineError(f"url {obj.get('url')!r} is not supported (only {CHAT_COMPLETIONS})")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise LineError(f"body must be an object, not {_type_name(body)}")
    messages = _check_messages(body.get("messages"))
    model = _check_model(body.get("model"), default_model, check_model)
    extra = {k: v for k, v in body.items() if k not in ("messages", "model")}
    return messages, model, extra


def parse_line(
    raw: bytes, line: int, default_model: str, check_model: ModelCheck
) -> PromptRecord | InvalidLine:
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
        return _record(obj, record_id, line, default_model, check_model)
    except LineError as exc:
        model = obj.get("model")
        return InvalidLine(record_id, line, str(exc), model if isinstance(model, str) else None)


def _record(
    obj: dict[str, Any], record_id: Id, line: int, default_model: str, check_model: ModelCheck
) -> PromptRecord:
    params = None
    if "body" in obj or "url" in obj:
        messages, model, extra = _batch_request(obj, default_model, check_model)
        metadata = {k: v for k, v in obj.items() if k not in _BATCH_KEYS}
        if extra:
            metadata["body"] = params = extra
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
        model = _check_model(obj.get("model"), default_model, check_model)
        metadata = {k: v for k, v in obj.items() if k not in _NATIVE_KEYS}
    return PromptRecord(record_id, line, messages, model, metadata or None, params)
