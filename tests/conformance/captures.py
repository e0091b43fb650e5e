"""Real wire captures of one release, written outside the repository for the emulator's authors.

Layout of `<captures>/<release>/`:
  page.html                 the chat page as served
  chat-markup.html          the chat widget tags (with data-config / data-nonce) and the plugin's
                            inline scripts (window.aipkit_*, wpaicgParams), verbatim
  NN-<name>.request.http    the exact bytes sent
  NN-<name>.response.http   the exact bytes received (status line, headers, chunked body; SSE whole)
  upstream.jsonl            every request the fake OpenAI received during the captures
  findings.json             the experiments' answers, the bot/settings as stored, the shapes
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.conformance.markup import PageFacts
from tests.conformance.wire import Exchange

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class Captures:
    """One release's capture folder (created fresh: earlier files of that release are removed)."""

    def __init__(self, root: Path, release: str) -> None:
        self.folder = root / release
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.iterdir():
            if old.is_file():
                old.unlink()
        self._count = 0

    def exchanges(self, exchanges: list[Exchange]) -> None:
        for exchange in exchanges:
            self._count += 1
            stem = f"{self._count:02d}-{_UNSAFE.sub('_', exchange.name)}"
            (self.folder / f"{stem}.request.http").write_bytes(exchange.request)
            received = exchange.raw or f"(no response: {exchange.error})".encode()
            (self.folder / f"{stem}.response.http").write_bytes(received)

    def page(self, exchange: Exchange, facts: PageFacts) -> None:
        (self.folder / "page.html").write_bytes(exchange.body)
        parts = [
            "<!-- chat widget tags -->",
            *facts.tags,
            "",
            "<!-- plugin scripts -->",
            *facts.scripts,
        ]
        (self.folder / "chat-markup.html").write_text("\n".join(parts) + "\n")

    def upstream(self, entries: list[dict[str, Any]]) -> None:
        with (self.folder / "upstream.jsonl").open("w", encoding="utf-8") as out:
            for entry in entries:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def findings(self, findings: dict[str, Any]) -> None:
        (self.folder / "findings.json").write_text(
            json.dumps(findings, indent=2, ensure_ascii=False, default=str) + "\n"
        )
