"""The harness' own reading of a chat page (PROTOCOL.md §A1, §B1), independent of batchgpt's.

It finds which generation a page speaks, the values a client needs, and the chat-relevant
markup verbatim (widget tags with their attributes, the plugin's script variables) for captures.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

_TAG = re.compile(r"<div\s[^<>]*>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"""\s([a-zA-Z_:][-a-zA-Z0-9_:.]*)=(?:"([^"]*)"|'([^']*)')""")
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.IGNORECASE | re.DOTALL)
_WPAICG_PARAMS = re.compile(r"var\s+wpaicgParams\s*=\s*(\{.*?\});", re.DOTALL)
_NONCE_ACTION = re.compile(r'window\.aipkit_getChatNonceAction\s*=\s*"([^"]+)"')
CLIENT_KEYS = ("botId", "nonce", "ajaxUrl", "postId")


@dataclass
class AipkitBot:
    """One AIPKit chat box: the element carrying `data-config` and what it says."""

    element: str
    element_id: str
    config: dict[str, Any]
    tag: str

    @property
    def bot_id(self) -> int:
        return int(self.config.get("botId") or 0)

    @property
    def nonce(self) -> str:
        return str(self.config.get("nonce") or "")

    @property
    def ajax_url(self) -> str:
        return str(self.config.get("ajaxUrl") or "")

    @property
    def post_id(self) -> int:
        value = self.config.get("postId")
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0


@dataclass
class PageFacts:
    """What a page carries: its generation and the chat values, plus the raw markup."""

    generation: str | None = None
    legacy_attributes: dict[str, str] = field(default_factory=dict)
    legacy_params: dict[str, Any] | None = None
    bots: list[AipkitBot] = field(default_factory=list)
    nonce_action: str | None = None
    tags: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)

    @property
    def legacy_nonce(self) -> str:
        if self.legacy_attributes.get("data-nonce"):
            return self.legacy_attributes["data-nonce"]
        return str((self.legacy_params or {}).get("search_nonce") or "")

    def summary(self) -> str:
        if self.generation == "legacy":
            where = []
            if self.legacy_attributes.get("data-nonce"):
                where.append("div.wpaicg-chat-shortcode[data-nonce]")
            if self.legacy_params and self.legacy_params.get("search_nonce"):
                where.append("wpaicgParams.search_nonce")
            return "legacy: " + ", ".join(where)
        if self.generation == "aipkit":
            bots = ", ".join(f"{b.element}#{b.element_id} botId={b.bot_id}" for b in self.bots)
            refresh = f"; {self.nonce_action} advertised" if self.nonce_action else ""
            return f"aipkit: {bots}{refresh}"
        return "no chat markup"

    def markers(self) -> list[str]:
        """A comparable list of what the page offers a client (for the emulator diff)."""
        found = []
        if self.legacy_attributes:
            keys = [
                k
                for k in ("data-nonce", "data-post-id", "data-url", "data-bot-id")
                if k in self.legacy_attributes
            ]
            found.append("div.wpaicg-chat-shortcode[" + ",".join(keys) + "]")
        if self.legacy_params is not None:
            found.append(
                "wpaicgParams{"
                + ",".join(k for k in ("ajax_url", "search_nonce") if k in self.legacy_params)
                + "}"
            )
        for bot in self.bots:
            types = ",".join(
                f"{k}:{type(bot.config.get(k)).__name__}" for k in CLIENT_KEYS if k in bot.config
            )
            found.append(f"div.{bot.element}[data-config]{{{types}}}")
        if self.nonce_action:
            found.append(f"window.aipkit_getChatNonceAction={self.nonce_action}")
        return found


def _attributes(tag: str) -> dict[str, str]:
    return {
        m[1].lower(): html.unescape(m[2] if m[2] is not None else m[3] or "")
        for m in _ATTRIBUTE.finditer(tag)
    }


def read_page(page: str) -> PageFacts:
    facts = PageFacts()
    for match in _TAG.finditer(page):
        tag = match.group(0)
        attributes = _attributes(tag)
        classes = attributes.get("class", "").split()
        if "wpaicg-chat-shortcode" in classes or "wpaicg_chat_widget" in classes:
            facts.tags.append(tag)
            if "data-nonce" in attributes and not facts.legacy_attributes:
                facts.legacy_attributes = attributes
        elif "data-config" in attributes and (
            "aipkit_chat_container" in classes or "aipkit_popup_wrapper" in classes
        ):
            facts.tags.append(tag)
            try:
                config = json.loads(attributes["data-config"])
            except ValueError:
                config = {}
            element = (
                "aipkit_popup_wrapper"
                if "aipkit_popup_wrapper" in classes
                else ("aipkit_chat_container")
            )
            facts.bots.append(AipkitBot(element, attributes.get("id", ""), config, tag))
        elif "aipkit_chat_container" in classes:
            facts.tags.append(tag)
    if params := _WPAICG_PARAMS.search(page):
        try:
            facts.legacy_params = json.loads(params.group(1))
        except ValueError:
            facts.legacy_params = {}
    if action := _NONCE_ACTION.search(page):
        facts.nonce_action = action.group(1)
    facts.scripts = [
        s for s in _SCRIPT.findall(page) if "aipkit" in s.lower() or "wpaicg" in s.lower()
    ]
    if facts.bots:
        facts.generation = "aipkit"
    elif facts.legacy_nonce:
        facts.generation = "legacy"
    return facts
