"""Questions put to the real plugin beyond the fixed probes, each answered from the wire.

- history: AIPKit, a second prompt in the same `conversation_uuid` (does the AI get the first
  turn?); legacy, `wpaicg_chat_history=[]` against the `["Human: <message>"]` the seed sent
  (how often does the prompt reach the AI?);
- upstream failures: how the plugin relays an OpenAI 429 and 500 to the browser;
- guest quota: a one-token guest limit on the chat box, then two prompts from one guest;
- AIPKit only: the cache POST as a browser's multipart FormData, and a stream for a bot that
  does not exist.
Every exchange lands in the probe client's list, so captures keep them all.
"""

from __future__ import annotations

import json
import random
import string
import urllib.parse
import uuid
from typing import Any

from tests.conformance import plugin as plugin_setup
from tests.conformance.markup import PageFacts, read_page
from tests.conformance.plugin import ChatSetup
from tests.conformance.probes import AipkitVisitor, ajax_url, framed, legacy_form
from tests.conformance.shapes import sse_events
from tests.conformance.upstream import FakeOpenAI
from tests.conformance.wire import Client, Exchange
from tests.conformance.wordpress import WordPress


def _errors(exchange: Exchange) -> list[str]:
    """The `error` texts of an AIPKit stream (or the JSON `msg`/`data.message` of a POST)."""
    texts = []
    for name, data in sse_events(exchange.text):
        if name == "error":
            try:
                texts.append(str(json.loads(data).get("error")))
            except ValueError:
                texts.append(data)
    if not texts and exchange.text.strip().startswith("{"):
        try:
            body = json.loads(exchange.text)
        except ValueError:
            return texts
        message = body.get("msg") or (body.get("data") or {}).get("message")
        if message:
            texts.append(str(message))
    return texts


def _answer(exchange: Exchange) -> str:
    """The answer text carried by a stream (AIPKit deltas or legacy choices) or a JSON body."""
    pieces = []
    for name, data in sse_events(exchange.text):
        if name != "message" or data.strip() == "[DONE]":
            continue
        try:
            payload = json.loads(data)
        except ValueError:
            continue
        if isinstance(payload.get("delta"), str):
            pieces.append(payload["delta"])
        for choice in payload.get("choices") or []:
            pieces.append(str((choice.get("delta") or {}).get("content") or ""))
    if pieces:
        return "".join(pieces)
    try:
        return str(json.loads(exchange.text).get("data") or "")
    except (ValueError, AttributeError):
        return ""


def _upstream_for(upstream: FakeOpenAI, mark: int, text: str) -> list[dict[str, Any]]:
    return [e for e in upstream.since(mark) if any(text in u for u in e.get("user_messages") or [])]


def _tag() -> str:
    return "".join(random.choices(string.ascii_lowercase, k=6))


def aipkit_history(
    client: Client, facts: PageFacts, page_url: str, upstream: FakeOpenAI
) -> dict[str, Any]:
    visitor = AipkitVisitor(client, facts, page_url)
    conversation = str(uuid.uuid4())
    first, second = f"History first turn {_tag()}.", f"History second turn {_tag()}."
    mark = upstream.mark()
    _, one = visitor.ask("history_turn_1", framed(first), conversation=conversation)
    _, two = visitor.ask("history_turn_2", framed(second), conversation=conversation)
    asked = _upstream_for(upstream, mark, second)
    body = asked[-1]["body"] if asked else {}
    items = body.get("input") if isinstance(body, dict) else None
    roles = [i.get("role") for i in items] if isinstance(items, list) else []
    dumped = json.dumps(body, ensure_ascii=False)
    return {
        "second_turn_input_roles": roles,
        "first_prompt_in_second_request": first in dumped,
        "first_answer_in_second_request": _answer(one) != "" and _answer(one) in dumped,
        "second_answered": bool(_answer(two)),
    }


def legacy_history(
    client: Client, facts: PageFacts, page_url: str, upstream: FakeOpenAI
) -> dict[str, Any]:
    ajax = ajax_url(facts, page_url, client.origin)
    outcome: dict[str, Any] = {}
    for label, history in (("empty", "[]"), ("seed_human", None)):
        text = f"History check {label} {_tag()}."
        message = framed(text)
        form = legacy_form(facts, message, page_url)
        form["wpaicg_chat_history"] = history or json.dumps([f"Human: {message}"])
        mark = upstream.mark()
        client.post_form(f"legacy_history_{label}", ajax, form, referer=page_url)
        asked = _upstream_for(upstream, mark, text)
        body = json.dumps(asked[-1]["body"], ensure_ascii=False) if asked else ""
        outcome[f"history_{label}"] = {
            "upstream_requests": len(asked),
            "prompt_occurrences_in_request": body.count(text),
            "user_messages": asked[-1]["user_messages"] if asked else [],
        }
    return outcome


def upstream_failures(
    client: Client, facts: PageFacts, page_url: str, generation: str, upstream: FakeOpenAI
) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    for marker in ("[upstream-429]", "[upstream-500]"):
        name = "upstream_" + marker.strip("[]").split("-")[1]
        message = framed(f"Upstream failure probe {marker}")
        if generation == "aipkit":
            _, exchange = AipkitVisitor(client, facts, page_url).ask(name, message)
        else:
            exchange = client.post_form(
                name,
                ajax_url(facts, page_url, client.origin),
                legacy_form(facts, message, page_url),
                referer=page_url,
            )
        outcome[name] = {
            "status": exchange.status,
            "content_type": exchange.content_type,
            "errors": _errors(exchange),
            "answer_text": _answer(exchange)[:300],
            "body_head": exchange.text[:400] if generation == "legacy" else "",
        }
    return outcome


def guest_quota(
    client: Client, site: WordPress, setup: ChatSetup, page_url: str, upstream: FakeOpenAI
) -> dict[str, Any]:
    plugin_setup.set_guest_quota(site, setup, 1)
    try:
        page = client.get("quota_page", page_url)
        facts = read_page(page.text)
        outcome: dict[str, Any] = {}
        if setup.generation == "aipkit":
            visitor = AipkitVisitor(client, facts, page_url)
            for turn in (1, 2, 3):
                _, exchange = visitor.ask(f"quota_turn_{turn}", framed(f"Quota turn {turn}."))
                outcome[f"turn_{turn}"] = {
                    "errors": _errors(exchange),
                    "answered": bool(_answer(exchange)),
                    "events": [n for n, _ in sse_events(exchange.text)],
                    "error_data": [d for n, d in sse_events(exchange.text) if n == "error"],
                }
        else:
            ajax = ajax_url(facts, page_url, client.origin)
            form_client = "".join(random.choices(string.ascii_letters, k=10))
            for turn in (1, 2, 3):
                form = legacy_form(
                    facts,
                    framed(f"Quota turn {turn}."),
                    page_url,
                    wpaicg_chat_client_id=form_client,
                )
                exchange = client.post_form(f"quota_turn_{turn}", ajax, form, referer=page_url)
                outcome[f"turn_{turn}"] = {
                    "status": exchange.status,
                    "content_type": exchange.content_type,
                    "errors": _errors(exchange),
                    "answered": bool(_answer(exchange)),
                    "body_head": exchange.text[:300],
                }
        return outcome
    finally:
        plugin_setup.set_guest_quota(site, setup, None)


def aipkit_extras(client: Client, facts: PageFacts, page_url: str) -> dict[str, Any]:
    visitor = AipkitVisitor(client, facts, page_url)
    boundary = "----WebKitFormBoundary" + "".join(random.choices(string.ascii_letters, k=16))
    fields = {
        "action": "aipkit_cache_sse_message",
        "message": framed("Multipart probe."),
        "_ajax_nonce": visitor.nonce,
        "bot_id": str(visitor.bot.bot_id),
    }
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        )
        + f"--{boundary}--\r\n"
    )
    multipart = client.send(
        "cache_multipart",
        "POST",
        visitor.ajax,
        {
            "accept": "*/*",
            "content-type": f"multipart/form-data; boundary={boundary}",
            "origin": client.origin,
            "referer": page_url,
        },
        body.encode(),
    )
    key = visitor.cache_key(multipart)
    wrong_bot = visitor.stream("stream_unknown_bot", key, bot_id="999999")
    form = {**fields, "message": framed("Cross-origin probe.")}
    cross = client.send(
        "cache_cross_origin",
        "POST",
        visitor.ajax,
        {
            "accept": "*/*",
            "content-type": "application/x-www-form-urlencoded; charset=UTF-8",
            "origin": "https://other.example",
            "referer": "https://other.example/",
        },
        urllib.parse.urlencode(form).encode(),
    )
    return {
        "cache_multipart": {"status": multipart.status, "cache_key": bool(key)},
        "stream_unknown_bot": {
            "errors": _errors(wrong_bot),
            "events": [n for n, _ in sse_events(wrong_bot.text)],
        },
        "cache_cross_origin": {
            "status": cross.status,
            "errors": _errors(cross),
            "body": cross.text[:300],
        },
    }
