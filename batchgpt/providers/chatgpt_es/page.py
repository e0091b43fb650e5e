"""Read a chat page: which chat generation it carries, and what a client needs to ask it.

- AIPKit (plugin ≥ 2.3, PROTOCOL.md §B1): every `aipkit_chat_container` / `aipkit_popup_wrapper`
  with a `data-config` (HTML-escaped JSON): bot id, nonce, ajaxUrl, post id; and whether the page
  advertises the nonce refresh action (`window.aipkit_getChatNonceAction`, 2.4.71).
- Legacy (plugin ≤ 2.2, §A1): the chat nonce, post id and page url, searched in order of trust:
  the chat widget's attributes (the only place the plugin prints the chat nonce), the plugin's
  `wpaicgParams` script, then the markups only the old provider relied on.

Every pattern is linear-time (bounded, non-nested quantifiers) and the page is cut to `PAGE_LIMIT`
bytes before searching, so hostile HTML cannot stall the event loop.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass

PAGE_LIMIT = 2 * 1024 * 1024

_TOKEN = r"([A-Za-z0-9_-]{1,64})"
_Q = r"[\"']"

_NONCE = re.compile(_TOKEN)
_DIV_TAG = re.compile(r"<div\s[^<>]{0,4096}>", re.IGNORECASE)
# AIPKit's tag carries ~70 keys of configuration: bounded generously, and still linear, since a
# tag ends at the next `<` or `>`; which tags are AIPKit's is decided after the match.
_LONG_DIV_TAG = re.compile(r"<div\s[^<>]{0,262144}>", re.IGNORECASE)
_AIPKIT_CLASSES = ("aipkit_chat_container", "aipkit_popup_wrapper")
_DATA_CONFIG = re.compile(r"""\sdata-config=(?:'([^']*)'|"([^"]*)")""", re.IGNORECASE)
_NONCE_ACTION = re.compile(
    r"""window\.aipkit_getChatNonceAction\s*=\s*["']([A-Za-z0-9_]{1,64})["']"""
)
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
class LegacyChat:
    """The legacy chat on a page: the nonce is required, post_id and url are optional."""

    nonce: str
    post_id: str
    url: str | None
    source: str


@dataclass(frozen=True, slots=True)
class AipkitBot:
    """One AIPKit chatbot on a page, as its `data-config` describes it."""

    bot_id: int
    nonce: str
    ajax_url: str | None
    post_id: int
    mode: str  # "inline" or "popup"
    provider: str | None = None
    require_consent: bool = False
    conversation_state: bool = False


@dataclass(frozen=True, slots=True)
class AipkitChat:
    """The AIPKit bots on a page (first as shown) and its nonce refresh action, if advertised."""

    bots: tuple[AipkitBot, ...]
    nonce_action: str | None

    def bot(self, bot_id: int | None) -> AipkitBot | None:
        """The bot `bot_id`, or the first when None; None when it is not on the page."""
        if bot_id is None:
            return self.bots[0]
        return next((bot for bot in self.bots if bot.bot_id == bot_id), None)


@dataclass(frozen=True, slots=True)
class ChatPage:
    """Both generations as found on one page (a page carries one of them, or none)."""

    legacy: LegacyChat | None
    aipkit: AipkitChat | None

    @property
    def generation(self) -> str | None:
        return "aipkit" if self.aipkit else "legacy" if self.legacy else None


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


def _text(page: bytes | str) -> str:
    if isinstance(page, bytes):
        return page[:PAGE_LIMIT].decode("utf-8", "replace")
    return page[:PAGE_LIMIT]


def read_chat_page(page: bytes | str) -> ChatPage:
    """Whatever chat `page` carries, of either generation."""
    text = _text(page)
    return ChatPage(find_legacy_chat(text), find_aipkit_chat(text))


def _aipkit_bot(tag: str) -> AipkitBot | None:
    found = _DATA_CONFIG.search(tag)
    if found is None:
        return None
    try:
        config = json.loads(html.unescape(found[1] if found[1] is not None else found[2]))
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    bot_id, post_id, nonce = config.get("botId"), config.get("postId", 0), config.get("nonce")
    ajax_url, provider = config.get("ajaxUrl"), config.get("provider")
    if isinstance(bot_id, str) and bot_id.isdigit():
        bot_id = int(bot_id)
    if isinstance(post_id, str):
        post_id = int(post_id) if post_id.isdigit() else 0
    if (
        not isinstance(bot_id, int)
        or isinstance(bot_id, bool)
        or bot_id < 1
        or not isinstance(nonce, str)
        or not _NONCE.fullmatch(nonce)
    ):
        return None
    return AipkitBot(
        bot_id=bot_id,
        nonce=nonce,
        ajax_url=ajax_url if isinstance(ajax_url, str) and ajax_url else None,
        post_id=post_id if isinstance(post_id, int) and not isinstance(post_id, bool) else 0,
        mode="popup" if "aipkit_popup_wrapper" in tag else "inline",
        provider=provider if isinstance(provider, str) else None,
        require_consent=config.get("requireConsentCompliance") is True,
        conversation_state=config.get("enableOpenAIConversationState") is True,
    )


def find_aipkit_chat(page: bytes | str) -> AipkitChat | None:
    """The AIPKit bots on `page` (each once, in page order), or None when it has none."""
    text = _text(page)
    bots: dict[int, AipkitBot] = {}
    for tag in _LONG_DIV_TAG.finditer(text):
        markup = tag.group(0)
        if not any(name in markup for name in _AIPKIT_CLASSES):
            continue
        bot = _aipkit_bot(markup)
        if bot is not None:
            bots.setdefault(bot.bot_id, bot)
    if not bots:
        return None
    action = _NONCE_ACTION.search(text)
    return AipkitChat(tuple(bots.values()), action[1] if action else None)


def find_legacy_chat(page: bytes | str) -> LegacyChat | None:
    """The legacy chat parameters on `page`, or None when it carries no chat nonce."""
    page = _text(page)
    widget = _chat_widget(page)
    if widget and _NONCE.fullmatch(widget.get("data-nonce", "")):
        post_id = widget.get("data-post-id", "")
        return LegacyChat(
            nonce=widget["data-nonce"],
            post_id=post_id if post_id.isdigit() else "",
            url=widget.get("data-url") or None,
            source="data-nonce",
        )
    post_id = _first(_FALLBACK_POST_IDS, page) or ""
    if match := _WPAICG_PARAMS.search(page):
        return LegacyChat(nonce=match.group(1), post_id=post_id, url=None, source="wpaicgParams")
    if nonce := _first(_FALLBACK_NONCES, page):
        return LegacyChat(nonce=nonce, post_id=post_id, url=None, source="fallback")
    return None
