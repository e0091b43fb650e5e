"""The legacy chat (plugin ≤ 2.2, PROTOCOL.md §A): the form to send and how to read the answer.

One POST per prompt to admin-ajax.php. The answer is an event stream of OpenAI-style deltas ending
in `[DONE]` (the default) or one JSON object (streaming off). A stream that ends with a
`finish_reason` but without `[DONE]`, or with `[LIMITED]`, is the plugin relaying an error of the AI
behind it as if it were an answer: an error carrying that text, never an answer.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Mapping

import orjson

from batchgpt.errors import (
    BadResponseError,
    BlockedError,
    NonceError,
    ProviderError,
    QuotaError,
    SiteError,
    quote_body,
)
from batchgpt.providers.chatgpt_es.answer import check_status, checked_answer
from batchgpt.providers.chatgpt_es.page import LegacyChat

ACTION = "wpaicg_chat_shortcode_message"
_CLIENT_ID_ALPHABET = string.ascii_letters + string.digits
_NONCE_FAILED = "Nonce verification failed"
#: The keys that make an event a refusal rather than a piece of the answer (`_site_refusal`).
_REFUSAL_KEYS = frozenset({"status", "msg", "tokenLimitReached", "ipBanned", "messageFlagged"})


def client_id(guest_id: str) -> str:
    """The `wpaicg_chat_client_id` of a guest: the plugin counts a guest's tokens by it
    (`getUserTokenUsage`), so it stays the same, as a browser's does (PROTOCOL.md §C5)."""
    digest = hashlib.blake2b(guest_id.encode(), digest_size=16).digest()
    return "".join(_CLIENT_ID_ALPHABET[byte % len(_CLIENT_ID_ALPHABET)] for byte in digest[:10])


def chat_form(chat: LegacyChat, message: str, page_url: str, client: str) -> dict[str, str]:
    """The admin-ajax form for one prompt (§A2). The history is empty: the browser sends the
    history before the new question, and a copy of it makes the AI read the prompt twice."""
    return {
        "action": ACTION,
        "_wpnonce": chat.nonce,
        "post_id": chat.post_id,
        "url": chat.url or page_url,
        "message": message,
        "bot_id": "0",
        "chatbot_identity": "shortcode",
        "wpaicg_chat_client_id": client,
        "wpaicg_chat_history": "[]",
        "chat_id": str(random.randint(1, 100000)),
        "wpaicg_user_agree": "1",
    }


def _site_refusal(obj: dict[str, object]) -> ProviderError | None:
    msg = obj.get("msg")
    message = quote_body(msg) if isinstance(msg, str) and msg else "the site refused the message"
    if obj.get("tokenLimitReached"):
        return QuotaError(message, http_status=200)
    if obj.get("ipBanned"):
        return BlockedError(message, http_status=200)
    if obj.get("status") == "error":
        if _NONCE_FAILED in message:
            return NonceError(f"nonce rejected: {message}", http_status=200)
        return SiteError(message, http_status=200)
    if obj.get("messageFlagged"):
        return SiteError(message, http_status=200)
    return None


def answer_from_json(obj: object) -> str:
    """The answer in a JSON reply (its other keys are ignored), or the error it stands for."""
    if not isinstance(obj, dict):
        raise BadResponseError(f"JSON reply is not an object: {quote_body(orjson.dumps(obj))}")
    if refusal := _site_refusal(obj):
        raise refusal
    data = obj.get("data")
    if isinstance(data, str):
        return checked_answer(data)
    if isinstance(obj.get("msg"), str):
        raise SiteError(quote_body(obj["msg"]), http_status=200)  # type: ignore[arg-type]
    raise BadResponseError(f"reply has neither data nor msg: {quote_body(orjson.dumps(obj))}")


class SseDecoder:
    """Decode the plugin's `text/event-stream` line by line into answer deltas."""

    def __init__(self) -> None:
        self.done = False
        self.finished_early = False  # a finish_reason or [LIMITED] before any [DONE]
        self._text: list[str] = []

    def feed(self, line: bytes) -> str:
        """The delta text a line carries ('' for none); raises on a site error event."""
        line = line.strip()
        if not line.startswith(b"data:"):
            return ""
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return ""
        if payload == b"[LIMITED]":
            self.finished_early = True
            return ""
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise BadResponseError(f"broken stream event: {quote_body(payload)}") from exc
        if not isinstance(event, dict):
            raise BadResponseError(f"broken stream event: {quote_body(payload)}")
        if refusal := _site_refusal(event):
            raise refusal
        try:
            choice = event["choices"][0]
            content = choice.get("delta", {}).get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            return ""
        if choice.get("finish_reason"):
            self.finished_early = True
        if not isinstance(content, str):
            return ""
        self._text.append(content)
        return content

    def finish(self) -> None:
        """Raise when the stream ended before `[DONE]`: the AI behind the site failed (its text
        is the error's), or the stream was cut."""
        if self.done:
            return
        text = quote_body("".join(self._text))
        if self.finished_early:
            raise BadResponseError(f"the site's AI failed: {text or 'no text'}", http_status=200)
        raise BadResponseError("stream ended before [DONE]", http_status=200)


def is_event_stream(headers: Mapping[str, str], body_start: bytes) -> bool:
    return "text/event-stream" in headers.get("content-type", "") or body_start.startswith(b"data:")


_FIRST_EVENT = b"data: "
_BETWEEN_EVENTS = b"\n\ndata: "
_DONE_EVENT = b"\n\ndata: [DONE]\n\n"


def _stream_text(body: bytes) -> str:
    """The answer in a whole event stream: what `SseDecoder` says line by line, with the plain
    case (`data: EVENT` blocks, each event one JSON object carrying a piece of the answer, then
    `data: [DONE]`) decoded in one orjson call. Anything else (a refusal, a broken event, another
    kind of line, CR line ends, no `[DONE]`) is read by the decoder, which says what it is."""
    if body.startswith(_FIRST_EVENT) and body.endswith(_DONE_EVENT):
        events_part = body[len(_FIRST_EVENT) : -len(_DONE_EVENT)]
        try:
            # JSON strings hold no raw newline, so every separator is one between two events
            events = orjson.loads(b"[" + events_part.replace(_BETWEEN_EVENTS, b",") + b"]")
            if len(events) == events_part.count(_BETWEEN_EVENTS) + 1:  # no event is two
                pieces = []
                for event in events:
                    if not _REFUSAL_KEYS.isdisjoint(event):
                        break
                    piece = event["choices"][0]["delta"].get("content") or ""
                    if not isinstance(piece, str):
                        break
                    pieces.append(piece)
                else:
                    return "".join(pieces)
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            pass
    decoder = SseDecoder()
    text = "".join(decoder.feed(line) for line in body.splitlines())
    decoder.finish()
    return text


def parse_answer(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """The answer in a complete response, or the classified error it stands for."""
    check_status(status, headers, body)
    if is_event_stream(headers, body[:5]):
        return checked_answer(_stream_text(body))
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadResponseError(f"reply is not JSON: {quote_body(body)}", http_status=200) from exc
    return answer_from_json(obj)
