"""A response reduced to what a client depends on, so two servers' answers can be compared.

The shape keeps the status code, the content type without parameters, and the body's form:
JSON as its key structure (scalars by type, except a few enumerated keys whose values matter:
`status`, `success`, `code`, `finished`, `tokenLimitReached`, and the `error` text of
an error event, which clients classify by), an event stream as its events in
order (`name{keys}`, unnamed events as `message`, comments as `:`, repeats folded into `+`),
a short text body verbatim (`0`, `-1`), HTML by the known phrases it contains. Variable texts
(answers, nonces, ids) never enter a shape.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.conformance.markup import read_page
from tests.conformance.wire import Exchange

KEEP_VALUES = frozenset({"status", "success", "code", "finished", "tokenLimitReached", "error"})
SHORT_TEXT = 16
HTML_PHRASES = (
    "The link you followed has expired",
    "Just a moment...",
    "Du musst das K",
    "wpaicg-chat-shortcode",
    "aipkit_chat_container",
    "aipkit_popup_wrapper",
)
SHAPED_HEADERS = ("x-accel-buffering",)


def structure(value: Any, key: str | None = None) -> str:
    """JSON key structure: `{a:str,b:[int]}`; enumerated keys keep their values."""
    if isinstance(value, dict):
        inner = ",".join(f"{k}:{structure(v, k)}" for k, v in sorted(value.items()))
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + (structure(value[0]) if value else "") + "]"
    if key in KEEP_VALUES and isinstance(value, str | int | bool):
        return json.dumps(value)
    if isinstance(value, bool):
        return "bool"
    if value is None:
        return "null"
    return type(value).__name__


def sse_events(body: str) -> list[tuple[str, str]]:
    """(event name, data) per event of an event stream; comments as (':', '')."""
    events = []
    for block in re.split(r"\r?\n\r?\n", body):
        if not block.strip():
            continue
        name, data, comment = "message", [], False
        for line in re.split(r"\r?\n", block):
            if line.startswith(":"):
                comment = True
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            events.append((name, "\n".join(data)))
        elif comment:
            events.append((":", ""))
    return events


def _event_shape(name: str, data: str) -> str:
    if name == ":":
        return ":"
    if data.strip() == "[DONE]":
        return f"{name}:[DONE]" if name != "message" else "[DONE]"
    try:
        return name + structure(json.loads(data))
    except ValueError:
        return f"{name}(text)"


def _fold(items: list[str]) -> list[str]:
    folded: list[str] = []
    for item in items:
        if folded and folded[-1].rstrip("+") == item:
            folded[-1] = item + "+"
        else:
            folded.append(item)
    return folded


def is_event_stream(exchange: Exchange) -> bool:
    if exchange.content_type == "text/event-stream":
        return True
    head = exchange.body.lstrip()[:16]
    return head.startswith((b"data:", b"event:", b": "))


def body_shape(exchange: Exchange) -> str:
    text = exchange.text
    if is_event_stream(exchange):
        return (
            " ".join(_fold([_event_shape(n, d) for n, d in sse_events(text)])) or "(empty stream)"
        )
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            return "json " + structure(json.loads(stripped))
        except ValueError:
            return "text (broken json)"
    if len(stripped) <= SHORT_TEXT:
        return f"text {stripped!r}"
    if exchange.content_type == "text/html" or "<html" in text[:2000].lower():
        facts = read_page(text)
        parts = facts.markers() or [p for p in HTML_PHRASES if p in text]
        return "html " + (" ".join(parts) if parts else "(other)")
    return f"text ({len(stripped)} chars)"


def shape(exchange: Exchange) -> dict[str, str]:
    """The comparable lines of one exchange."""
    if exchange.error:
        return {"error": exchange.error.split(":")[0]}
    lines = {
        "status": str(exchange.status),
        "content-type": exchange.content_type or "(none)",
        "body": body_shape(exchange),
    }
    for header in SHAPED_HEADERS:
        if value := exchange.header(header):
            lines[header] = value
    return lines
