"""A fake OpenAI API that answers deterministically and logs every request it receives.

The answer to a request depends only on the text of its last user message (`answer_for`), so
the harness can tell what the plugin must have shown for each prompt. It speaks the wire formats
the plugin releases call: Chat Completions (JSON, and SSE `data:` chunks ending `data: [DONE]`),
the Responses API (JSON, and SSE with named `response.*` events ending `response.completed`),
legacy Completions, models, moderations and embeddings. A user message containing
`[upstream-429]` or `[upstream-500]` is answered with that OpenAI error instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conformance.services import free_port

MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-3.5-turbo")
CHUNK = 9
FAULTS = {
    "[upstream-429]": (
        429,
        "Rate limit reached for gpt-4o-mini in organization org-fake on requests per min.",
        "requests",
        "rate_limit_exceeded",
    ),
    "[upstream-500]": (
        500,
        "The server had an error while processing your request.",
        "server_error",
        None,
    ),
}


def answer_for(user_text: str) -> str:
    """The fake upstream's answer to a last user message `user_text`."""
    digest = hashlib.sha256(user_text.encode()).hexdigest()[:16]
    return f"Upstream answer {digest} \u2014 ok \u2713"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text")
        ]
        return "".join(parts)
    return ""


def user_messages(path: str, body: Any) -> list[str]:
    """Every user message's text in a request body, in order (Chat, Responses or Completions)."""
    if not isinstance(body, dict):
        return []
    if path.endswith("/chat/completions"):
        return [
            _content_text(m.get("content"))
            for m in body.get("messages") or []
            if isinstance(m, dict) and m.get("role") == "user"
        ]
    if path.endswith("/responses"):
        items = body.get("input")
        if isinstance(items, str):
            return [items]
        return [
            _content_text(item.get("content"))
            for item in items or []
            if isinstance(item, dict) and item.get("role", "user") == "user"
        ]
    if path.endswith("/completions"):
        prompt = body.get("prompt")
        return [prompt] if isinstance(prompt, str) else []
    return []


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


class FakeOpenAI:
    """The aiohttp application; `requests` holds one dict per request received."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.log_path = log_path
        self._lock = threading.Lock()
        self._counter = 0
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{path:.*}", self._handle)

    def mark(self) -> int:
        """A position in the log: `since(mark)` returns what arrived after it."""
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests[mark:])

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.log_path:
                with self.log_path.open("a", encoding="utf-8") as log:
                    log.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            salt = hashlib.md5(str(time.time()).encode()).hexdigest()[:18]
            return f"{prefix}_{self._counter:06d}{salt}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = "/" + request.match_info["path"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = headers["authorization"][:12] + "***"
        users = user_messages(path, body)
        stream = bool(isinstance(body, dict) and body.get("stream"))
        entry: dict[str, Any] = {
            "time": time.time(),
            "method": request.method,
            "path": path,
            "query": request.query_string,
            "headers": headers,
            "body": body,
            "stream": stream,
            "user_messages": users,
            "answer": None,
            "status": 200,
        }
        last = users[-1] if users else ""
        fault = next((value for marker, value in FAULTS.items() if marker in last), None)
        if fault:
            status, message, kind, code = fault
            entry["status"] = status
            self._record(entry)
            error = {"error": {"message": message, "type": kind, "param": None, "code": code}}
            return web.json_response(error, status=status)
        if path.endswith("/models"):
            self._record(entry)
            models = [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"}
                for m in MODEL_IDS
            ]
            return web.json_response({"object": "list", "data": models})
        if path.endswith("/moderations"):
            self._record(entry)
            return web.json_response(
                {
                    "id": self._next_id("modr"),
                    "model": "omni-moderation-latest",
                    "results": [{"flagged": False, "categories": {}, "category_scores": {}}],
                }
            )
        if path.endswith("/embeddings"):
            self._record(entry)
            data = [{"object": "embedding", "index": 0, "embedding": [0.0] * 1536}]
            return web.json_response(
                {
                    "object": "list",
                    "data": data,
                    "model": "text-embedding-3-small",
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            )
        endpoint = next(
            (k for k in ("/chat/completions", "/responses", "/completions") if path.endswith(k)),
            None,
        )
        if endpoint is None or not users:
            entry["status"] = 404 if endpoint is None else 400
            self._record(entry)
            message = "No user input" if endpoint else f"Invalid URL ({request.method} {path})"
            error = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
            return web.json_response(error, status=entry["status"])
        answer = answer_for(last)
        entry["answer"] = answer
        self._record(entry)
        model = str(body.get("model") or "gpt-4o-mini")
        usage_in = sum(_tokens(u) for u in users)
        if endpoint == "/chat/completions":
            if stream:
                return await self._chat_stream(request, model, answer, body)
            return web.json_response(self._chat_json(model, answer, usage_in))
        if endpoint == "/responses":
            if stream:
                return await self._responses_stream(request, model, answer, usage_in)
            return web.json_response(self._response_object(model, answer, usage_in, "completed"))
        if stream:
            return await self._completions_stream(request, model, answer)
        return web.json_response(
            {
                "id": self._next_id("cmpl"),
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"text": answer, "index": 0, "logprobs": None, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": usage_in,
                    "completion_tokens": _tokens(answer),
                    "total_tokens": usage_in + _tokens(answer),
                },
            }
        )

    # Chat Completions ----------------------------------------------------------------------------
    def _chat_json(self, model: str, answer: str, usage_in: int) -> dict[str, Any]:
        out = _tokens(answer)
        return {
            "id": self._next_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage_in,
                "completion_tokens": out,
                "total_tokens": usage_in + out,
            },
            "system_fingerprint": "fp_conformance",
        }

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        return response

    async def _chat_stream(
        self, request: web.Request, model: str, answer: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        response = await self._sse(request)
        ident, created = self._next_id("chatcmpl"), int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            data = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_conformance",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"

        await response.write(chunk({"role": "assistant", "content": "", "refusal": None}, None))
        for start in range(0, len(answer), CHUNK):
            await response.write(chunk({"content": answer[start : start + CHUNK]}, None))
        await response.write(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": _tokens(answer),
                    "total_tokens": 10 + _tokens(answer),
                },
            }
            await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _completions_stream(
        self, request: web.Request, model: str, answer: str
    ) -> web.StreamResponse:
        response = await self._sse(request)
        ident = self._next_id("cmpl")
        for start in range(0, len(answer) + CHUNK, CHUNK):
            piece = answer[start : start + CHUNK]
            finish = None if piece else "stop"
            data = {
                "id": ident,
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
            await response.write(
                b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # Responses API -------------------------------------------------------------------------------
    def _response_object(
        self,
        model: str,
        answer: str,
        usage_in: int,
        status: str,
        ident: str | None = None,
        item: str | None = None,
    ) -> dict[str, Any]:
        out = _tokens(answer)
        done = status == "completed"
        message = {
            "id": item or self._next_id("msg"),
            "type": "message",
            "status": "completed",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": answer}],
            "role": "assistant",
        }
        return {
            "id": ident or self._next_id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "model": model,
            "output": [message] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": usage_in,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": out,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage_in + out,
            }
            if done
            else None,
        }

    async def _responses_stream(
        self, request: web.Request, model: str, answer: str, usage_in: int
    ) -> web.StreamResponse:
        response = await self._sse(request)
        ident, item = self._next_id("resp"), self._next_id("msg")
        sequence = 0

        async def event(name: str, data: dict[str, Any]) -> None:
            nonlocal sequence
            payload = {"type": name, "sequence_number": sequence, **data}
            sequence += 1
            await response.write(
                f"event: {name}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
            )

        pending = self._response_object(model, answer, usage_in, "in_progress", ident, item)
        await event("response.created", {"response": pending})
        await event("response.in_progress", {"response": pending})
        await event(
            "response.output_item.added",
            {
                "output_index": 0,
                "item": {
                    "id": item,
                    "type": "message",
                    "status": "in_progress",
                    "content": [],
                    "role": "assistant",
                },
            },
        )
        where = {"item_id": item, "output_index": 0, "content_index": 0}
        await event(
            "response.content_part.added",
            {
                **where,
                "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
            },
        )
        for start in range(0, len(answer), CHUNK):
            await event(
                "response.output_text.delta",
                {**where, "delta": answer[start : start + CHUNK], "logprobs": []},
            )
        await event("response.output_text.done", {**where, "text": answer, "logprobs": []})
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": answer}
        await event("response.content_part.done", {**where, "part": part})
        await event(
            "response.output_item.done",
            {
                "output_index": 0,
                "item": {
                    "id": item,
                    "type": "message",
                    "status": "completed",
                    "content": [part],
                    "role": "assistant",
                },
            },
        )
        done = self._response_object(model, answer, usage_in, "completed", ident, item)
        await event("response.completed", {"response": done})
        await response.write_eof()
        return response


@contextmanager
def running_upstream(log_path: Path | None = None) -> Iterator[tuple[FakeOpenAI, str]]:
    """Serve a FakeOpenAI on a free loopback port from a background thread; yield it and its URL."""
    upstream = FakeOpenAI(log_path)
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> web.AppRunner:
        runner = web.AppRunner(upstream.app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
        return runner

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            state["runner"] = loop.run_until_complete(start())
        except Exception as exc:  # reported to the caller below
            state["error"] = exc
        ready.set()
        if "runner" in state:
            loop.run_forever()

    thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
    thread.start()
    ready.wait(10)
    if "runner" not in state:
        raise RuntimeError(f"fake upstream did not start: {state.get('error')}")
    try:
        yield upstream, f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
