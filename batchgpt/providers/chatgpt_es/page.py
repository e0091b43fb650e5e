"""Find the chat nonce, post id and page url in a chatgpt.es page (PROTOCOL.md §1).

Places are searched in order of trust: the chat widget's attributes (the only place the plugin
prints the chat nonce), the plugin's `wpaicgParams` script, then the markups only the old provider
relied on. Every pattern is linear-time (bounded, non-nested quantifiers) and the page is cut to
`PAGE_LIMIT` bytes before searching, so hostile HTML cannot stall the event loop.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

PAGE_LIMIT = 2 * 1024 * 1024

_TOKEN = r"([A-Za-z0-9_-]{1,64})"
_Q = r"[\"']"

_NONCE = re.compile(_TOKEN)
_DIV_TAG = re.compile(r"<div\s[^<>]{0,4096}>", re.IGNORECASE)
_ATTRIBUTE = re.compile(
    r"""\s([a-z-]{1,32})=(?:"([^"<>]{0,2048})"|'([^'<>]{0,2048})')""", re.IGNORECASE
)
# The object's text may not run into another "wpaicgParams": each character is scanned for one
# candidate only, so repeated openings cannot make the search quadratic.
_WPAICG_PARAMS = re.compile(
    r"wpaicgParams\s*=\s*\{(?:[^<w]|w(?!paicgParams)){0,8192}?\"search_nonce\"\s*:\s*\""
    + _TOKEN
    + '"'
)
_FALLBACK_NONCES = (
    re.compile(rf"<input\s+type={_Q}hidden{_Q}\s+name={_Q}_wpnonce{_Q}\s+value={_Q}{_TOKEN}{_Q}"),
    re.compile(r'"_wpnonce"\s*:\s*"' + _TOKEN + '"'),
    re.compile(rf"var\s+wpaicg_nonce\s*=\s*{_Q}{_TOKEN}{_Q}"),
    re.compile(rf"wpaicg_nonce\s*:\s*{_Q}{_TOKEN}{_Q}"),
)
_FALLBACK_POST_IDS = (
    re.compile(
        rf"<input\s+type={_Q}hidden{_Q}\s+name={_Q}post_id{_Q}\s+value={_Q}(\d{{1,20}}){_Q}"
    ),
    re.compile(r'"post_id"\s*:\s*"(\d{1,20})"'),
    re.compile(rf"var\s+post_id\s*=\s*{_Q}?(\d{{1,20}})"),
)


@dataclass(frozen=True, slots=True)
class ChatPage:
    """What a scrape yields: the nonce is required, post_id and url are optional."""

    nonce: str
    post_id: str
    url: str | None
    source: str


def _chat_widget(text: str) -> dict[str, str] | None:
    for tag in _DIV_TAG.finditer(text):
        markup = tag.group(0)
        if "wpaicg-chat" not in markup or "data-nonce" not in markup:
            continue
        return {
            m[1].lower(): html.unescape(m[2] or m[3] or "") for m in _ATTRIBUTE.finditer(markup)
        }
    return None


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> str | None:
    for pattern in patterns:
        if match := pattern.search(text):
            return match.group(1)
    return None


def find_chat_page(page: bytes | str) -> ChatPage | None:
    """The chat parameters on `page`, or None when it carries no chat nonce."""
    if isinstance(page, bytes):
        page = page[:PAGE_LIMIT].decode("utf-8", "replace")
    else:
        page = page[:PAGE_LIMIT]
    widget = _chat_widget(page)
    if widget and _NONCE.fullmatch(widget.get("data-nonce", "")):
        post_id = widget.get("data-post-id", "")
        return ChatPage(
            nonce=widget["data-nonce"],
            post_id=post_id if post_id.isdigit() else "",
            url=widget.get("data-url") or None,
            source="data-nonce",
        )
    post_id = _first(_FALLBACK_POST_IDS, page) or ""
    if match := _WPAICG_PARAMS.search(page):
        return ChatPage(nonce=match.group(1), post_id=post_id, url=None, source="wpaicgParams")
    if nonce := _first(_FALLBACK_NONCES, page):
        return ChatPage(nonce=nonce, post_id=post_id, url=None, source="fallback")
    return None
