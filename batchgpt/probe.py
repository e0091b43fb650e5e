"""`batchgpt probe`: what a site runs, learned before a job is pointed at it.

One scrape of the page (and with `ask` one real prompt, sent as a run would send it): the chat
generation, its bots, where the nonce was found, and every request with its status and time. The
exit code is 0 when the site would answer, else the code a run would end with: 69 for a site that
refuses everyone or cannot be reached, 2 for a bot that is not on the page, 1 for a prompt that
would be an error record.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from batchgpt.errors import (
    UNREACHABLE_KINDS,
    BlockedError,
    ProviderError,
)
from batchgpt.providers.chatgpt_es.page import AipkitBot, ChatPage, LegacyChat
from batchgpt.providers.chatgpt_es.session import ChatGptEsSession, MissingBotError, RequestRecord


@dataclass
class ProbeReport:
    url: str
    generation: str | None = None
    chat: dict[str, Any] | None = None
    bots: list[dict[str, Any]] = field(default_factory=list)
    nonce_refresh: str | None = None
    requests: list[RequestRecord] = field(default_factory=list)
    answer: str | None = None
    error: ProviderError | None = None

    @property
    def exit_code(self) -> int:
        error = self.error
        if error is None:
            return 0
        if isinstance(error, MissingBotError):
            return 2
        if error.halts_after or isinstance(error, BlockedError) or error.kind in UNREACHABLE_KINDS:
            return 69
        return 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "generation": self.generation,
            "chat": self.chat,
            "bots": self.bots,
            "nonce_refresh": self.nonce_refresh,
            "requests": [asdict(record) for record in self.requests],
            "answer": self.answer,
            "error": None
            if self.error is None
            else {"kind": self.error.kind, "message": self.error.message},
            "would_answer": self.exit_code == 0,
            "exit_code": self.exit_code,
        }

    def to_json(self) -> str:
        return orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2).decode()

    def text(self) -> str:
        lines = [f"site:      {self.url}"]
        if self.generation == "aipkit":
            lines.append("chat:      AIPKit (AI Power 2.3 or newer)")
            for bot in self.bots:
                chosen = " ← asked" if self.chat and bot["bot_id"] == self.chat["bot_id"] else ""
                lines.append(
                    f"bot:       {bot['bot_id']} ({bot['mode']}, AI {bot['provider'] or '?'}, "
                    f"post {bot['post_id']}){chosen}"
                )
            lines.append("nonce:     the bot's data-config")
            lines.append(
                "refresh:   "
                + (f"{self.nonce_refresh} (2.4.71 or newer)" if self.nonce_refresh else "by page")
            )
        elif self.generation == "legacy":
            assert self.chat is not None
            lines.append("chat:      legacy (AI Power 2.2 or older)")
            lines.append(
                f"nonce:     {self.chat['source']} (post id {self.chat['post_id'] or '-'})"
            )
        else:
            lines.append("chat:      none found")
        for record in self.requests:
            outcome = record.status if record.status is not None else record.error
            lines.append(
                f"request:   {record.method:<4} {record.kind:<6} {record.url} → {outcome} "
                f"in {record.seconds * 1000:.0f} ms"
            )
        if self.answer is not None:
            lines.append(f"answer:    {' '.join(self.answer.split())[:300]}")
        if self.error is not None:
            lines.append(f"error:     {self.error.kind}: {self.error.message}")
        verdict = "yes" if self.exit_code == 0 else f"no (a run would exit {self.exit_code})"
        lines.append(f"answers:   {verdict}")
        return "\n".join(lines)


def _describe(page: ChatPage | None, chosen: LegacyChat | AipkitBot | None) -> dict[str, Any]:
    described: dict[str, Any] = {}
    if page is not None and page.aipkit is not None:
        described["bots"] = [asdict(bot) for bot in page.aipkit.bots]
        described["nonce_refresh"] = page.aipkit.nonce_action
    if chosen is not None:
        described["chat"] = asdict(chosen)
    return described


async def probe(
    url: str,
    *,
    ask: str | None = None,
    chat: str = "auto",
    bot_id: int | None = None,
    proxy: str | None = None,
    timeout: float = 30.0,
) -> ProbeReport:
    """Scrape `url` once (and ask `ask` once) and report what was found."""
    report = ProbeReport(url)
    session = ChatGptEsSession(
        url,
        proxy=proxy,
        timeout=timeout,
        chat=chat,
        bot_id=bot_id,
        on_request=report.requests.append,
    )
    chosen: LegacyChat | AipkitBot | None = None
    try:
        chosen = await session.connect()
        if ask is not None:
            answer = await session.ask([{"role": "user", "content": ask}], "")
            report.answer = answer.text
    except ProviderError as error:
        report.error = error
    finally:
        await session.close()
    report.generation = session.page.generation if session.page else None
    for name, value in _describe(session.page, chosen).items():
        setattr(report, name, value)
    return report


def run_probe(url: str, **options: Any) -> ProbeReport:
    return asyncio.run(probe(url, **options))
