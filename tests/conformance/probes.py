"""A fixed set of probes per chat generation, run against any server, and the diff of two runs.

Legacy (PROTOCOL.md §A): the page, the chat POST with a good nonce, a bad nonce, an unknown
action, and the other generation's action. AIPKit (§B): the page, the cache POST (good nonce, bad
nonce, empty message), the stream GET (good, bad nonce, reused key, missing key, missing
conversation_uuid, missing session_id), the nonce refresh action, an unknown action and the
legacy action. Each probe's main exchange is reduced to its shape (shapes.py); `diff` lists,
line by line, where the emulator's shapes differ from the real plugin's.
"""

from __future__ import annotations

import json
import random
import string
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from batchgpt.providers.chatgpt_es import ChatGptEs
from tests.conformance.markup import PageFacts, read_page
from tests.conformance.shapes import shape
from tests.conformance.wire import Client, Exchange

AJAX_PATH = "/wp-admin/admin-ajax.php"
BAD_NONCE = "0000000000"
LEGACY_ACTION = "wpaicg_chat_shortcode_message"
UNKNOWN_ACTION = "batchgpt_conformance_no_such_action"
LEGACY_PROBES = ("page", "legacy_ok", "legacy_bad_nonce", "unknown_action", "aipkit_action")
AIPKIT_PROBES = (
    "page",
    "cache_ok",
    "cache_bad_nonce",
    "cache_empty_message",
    "stream_ok",
    "stream_bad_nonce",
    "stream_reused_key",
    "stream_missing_key",
    "stream_missing_conversation_uuid",
    "stream_missing_session_id",
    "nonce_refresh",
    "unknown_action",
    "legacy_action",
)


def framed(text: str) -> str:
    """The message batchgpt sends for a one-message prompt (PROTOCOL.md §C4)."""
    return ChatGptEs.format_message([{"role": "user", "content": text}])


def client_id() -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=10))


@dataclass
class ProbeRun:
    """The probes' main exchanges by name, every exchange in order, and the page read."""

    target: str
    page_url: str
    facts: PageFacts | None = None
    main: dict[str, Exchange] = field(default_factory=dict)
    client: Client | None = None
    error: str = ""

    def shapes(self) -> dict[str, dict[str, str]]:
        return {name: shape(exchange) for name, exchange in self.main.items()}


def legacy_form(facts: PageFacts, message: str, page_url: str, **changes: str) -> dict[str, str]:
    """The chat POST's fields as PROTOCOL.md §A2 gives them (history `[]`)."""
    attributes = facts.legacy_attributes
    form = {
        "action": LEGACY_ACTION,
        "_wpnonce": facts.legacy_nonce,
        "post_id": attributes.get("data-post-id", ""),
        "url": attributes.get("data-url") or page_url,
        "message": message,
        "bot_id": "0",
        "chatbot_identity": "shortcode",
        "wpaicg_chat_client_id": client_id(),
        "chat_id": str(random.randint(1, 100000)),
        "wpaicg_chat_history": "[]",
    }
    form.update(changes)
    return form


def ajax_url(facts: PageFacts, page_url: str, origin: str) -> str:
    if facts.bots and facts.bots[0].ajax_url:
        return facts.bots[0].ajax_url
    if facts.legacy_params and facts.legacy_params.get("ajax_url"):
        return str(facts.legacy_params["ajax_url"])
    return origin + AJAX_PATH


class AipkitVisitor:
    """A guest of one AIPKit bot: one session_id, the page's nonce, cache then stream."""

    def __init__(self, client: Client, facts: PageFacts, page_url: str) -> None:
        self.client = client
        self.bot = facts.bots[0]
        self.page_url = page_url
        self.ajax = self.bot.ajax_url or client.origin + AJAX_PATH
        self.session_id = str(uuid.uuid4())
        self.nonce = self.bot.nonce

    def cache(self, name: str, message: str, **changes: str) -> Exchange:
        form = {
            "action": "aipkit_cache_sse_message",
            "message": message,
            "_ajax_nonce": self.nonce,
            "bot_id": str(self.bot.bot_id),
            "user_client_message_id": (
                f"aipkit-client-msg-{self.bot.bot_id}-{int(time.time() * 1000)}-"
                + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            ),
        }
        form.update(changes)
        return self.client.post_form(name, self.ajax, form, referer=self.page_url)

    @staticmethod
    def cache_key(exchange: Exchange) -> str:
        try:
            return str(json.loads(exchange.body)["data"]["cache_key"])
        except (ValueError, KeyError, TypeError):
            return ""

    def stream(
        self,
        name: str,
        cache_key: str | None,
        *,
        conversation: str | None = "new",
        drop: tuple[str, ...] = (),
        **changes: str,
    ) -> Exchange:
        params = {
            "action": "aipkit_frontend_chat_stream",
            "cache_key": cache_key or "",
            "bot_id": str(self.bot.bot_id),
            "session_id": self.session_id,
            "conversation_uuid": str(uuid.uuid4()) if conversation == "new" else conversation or "",
            "post_id": str(self.bot.post_id),
            "_ts": str(int(time.time() * 1000)),
            "_ajax_nonce": self.nonce,
        }
        if self.bot.post_id <= 0:
            del params["post_id"]
        params.update(changes)
        for key in drop:
            params.pop(key, None)
        return self.client.get(name, self.ajax, params, accept="text/event-stream")

    def ask(
        self,
        name: str,
        message: str,
        *,
        conversation: str | None = "new",
        drop: tuple[str, ...] = (),
        **changes: str,
    ) -> tuple[Exchange, Exchange]:
        cached = self.cache(f"{name}.cache", message)
        key = self.cache_key(cached)
        return cached, self.stream(name, key, conversation=conversation, drop=drop, **changes)


def probe_legacy(client: Client, page_url: str, run: ProbeRun) -> None:
    facts = run.facts or PageFacts()
    ajax = ajax_url(facts, page_url, client.origin)
    post = client.post_form
    run.main["legacy_ok"] = post(
        "legacy_ok",
        ajax,
        legacy_form(facts, framed("Conformance probe: say hello."), page_url),
        referer=page_url,
    )
    run.main["legacy_bad_nonce"] = post(
        "legacy_bad_nonce",
        ajax,
        legacy_form(facts, framed("Conformance probe: bad nonce."), page_url, _wpnonce=BAD_NONCE),
        referer=page_url,
    )
    run.main["unknown_action"] = post(
        "unknown_action",
        ajax,
        {"action": UNKNOWN_ACTION, "_wpnonce": facts.legacy_nonce},
        referer=page_url,
    )
    run.main["aipkit_action"] = post(
        "aipkit_action",
        ajax,
        {"action": "aipkit_cache_sse_message", "message": "x", "_ajax_nonce": facts.legacy_nonce},
        referer=page_url,
    )


def probe_aipkit(client: Client, page_url: str, run: ProbeRun) -> None:
    facts = run.facts or PageFacts()
    if not facts.bots:
        run.error = "no AIPKit data-config on the page"
        return
    visitor = AipkitVisitor(client, facts, page_url)
    main = run.main
    main["cache_ok"] = visitor.cache("cache_ok", framed("Conformance probe: say hello."))
    key = visitor.cache_key(main["cache_ok"])
    main["cache_bad_nonce"] = visitor.cache(
        "cache_bad_nonce", framed("Conformance probe: bad nonce."), _ajax_nonce=BAD_NONCE
    )
    main["cache_empty_message"] = visitor.cache("cache_empty_message", "")
    main["stream_ok"] = visitor.stream("stream_ok", key)
    _, main["stream_bad_nonce"] = visitor.ask(
        "stream_bad_nonce", framed("Conformance probe: stream bad nonce."), _ajax_nonce=BAD_NONCE
    )
    main["stream_reused_key"] = visitor.stream("stream_reused_key", key)
    main["stream_missing_key"] = visitor.stream("stream_missing_key", None, drop=("cache_key",))
    _, main["stream_missing_conversation_uuid"] = visitor.ask(
        "stream_missing_conversation_uuid",
        framed("Conformance probe: no conversation."),
        drop=("conversation_uuid",),
    )
    _, main["stream_missing_session_id"] = visitor.ask(
        "stream_missing_session_id", framed("Conformance probe: no session."), drop=("session_id",)
    )
    main["nonce_refresh"] = client.post_form(
        "nonce_refresh",
        visitor.ajax,
        {"action": "aipkit_get_frontend_chat_nonce", "bot_id": str(visitor.bot.bot_id)},
        referer=page_url,
    )
    main["unknown_action"] = client.post_form(
        "unknown_action",
        visitor.ajax,
        {"action": UNKNOWN_ACTION, "_ajax_nonce": visitor.nonce},
        referer=page_url,
    )
    main["legacy_action"] = client.post_form(
        "legacy_action",
        visitor.ajax,
        {"action": LEGACY_ACTION, "_wpnonce": visitor.nonce, "message": "x"},
        referer=page_url,
    )


PROBES: dict[str, Callable[[Client, str, ProbeRun], None]] = {
    "legacy": probe_legacy,
    "aipkit": probe_aipkit,
}


def run_probes(target: str, generation: str, page_url: str) -> ProbeRun:
    """Every probe of `generation` against the server at `page_url`."""
    client = Client(page_url)
    run = ProbeRun(target=target, page_url=page_url, client=client)
    page = client.get(
        "page", page_url, accept="text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    )
    run.main["page"] = page
    run.facts = read_page(page.text)
    try:
        PROBES[generation](client, page_url, run)
    except Exception as exc:  # a probe that crashes is a reported failure, not a harness crash
        run.error = f"{type(exc).__name__}: {exc}"
    return run


@dataclass
class DiffLine:
    probe: str
    field: str
    plugin: str
    emulator: str

    @property
    def ok(self) -> bool:
        return self.plugin == self.emulator


def diff(plugin: ProbeRun, emulator: ProbeRun | None, names: tuple[str, ...]) -> list[DiffLine]:
    """One line per probe and shape field; a line whose sides differ is a failure."""
    real = plugin.shapes()
    emulated = emulator.shapes() if emulator else {}
    lines = []
    for name in names:
        ours, theirs = real.get(name, {}), emulated.get(name, {})
        for key in dict.fromkeys([*ours, *theirs]):
            lines.append(
                DiffLine(name, key, ours.get(key, "(absent)"), theirs.get(key, "(absent)"))
            )
        if not ours and not theirs:
            lines.append(DiffLine(name, "status", "(not run)", "(not run)"))
    return lines
