"""A raw HTTP/1.1 client that keeps the exact bytes of each exchange.

Probes and captures need what really went over the wire: the request as sent and the response as
received (status line, headers, body with its chunked framing; SSE streams whole). Each request
is sent on its own connection with `Connection: close` and read to EOF, so nothing is lost to a
client library's decoding. Headers are a desktop Chrome's, as batchgpt's curl_cffi impersonation
sends them (the emulator refuses requests without `sec-ch-ua`); no compression is asked for.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from dataclasses import dataclass, field

CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
BROWSER_HEADERS = {
    "user-agent": CHROME_UA,
    "sec-ch-ua": '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Windows"',
    "accept-language": "en-US,en;q=0.9",
}
READ_LIMIT = 8 * 1024 * 1024


@dataclass
class Exchange:
    """One request and its response, raw and parsed."""

    name: str
    method: str
    url: str
    request: bytes
    raw: bytes = b""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    elapsed: float = 0.0
    error: str = ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Client:
    """One browser-like visitor of one origin: its cookie jar and its exchanges."""

    def __init__(self, origin: str, timeout: float = 60) -> None:
        parsed = urllib.parse.urlsplit(origin)
        self.origin = f"{parsed.scheme}://{parsed.netloc}"
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self.exchanges: list[Exchange] = []

    def get(
        self, name: str, url: str, params: dict[str, str] | None = None, *, accept: str = "*/*"
    ) -> Exchange:
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        return self.send(name, "GET", url, {"accept": accept})

    def post_form(self, name: str, url: str, form: dict[str, str], referer: str = "") -> Exchange:
        body = urllib.parse.urlencode(form).encode()
        headers = {
            "accept": "*/*",
            "content-type": "application/x-www-form-urlencoded; charset=UTF-8",
            "origin": self.origin,
            "referer": referer or self.origin + "/",
            "x-requested-with": "XMLHttpRequest",
        }
        return self.send(name, "POST", url, headers, body)

    def send(
        self, name: str, method: str, url: str, headers: dict[str, str], body: bytes = b""
    ) -> Exchange:
        parts = urllib.parse.urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"host: {parts.netloc}"]
        merged = {**BROWSER_HEADERS, **headers}
        if self.cookies:
            merged["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body or method == "POST":
            merged["content-length"] = str(len(body))
        merged["connection"] = "close"
        lines += [f"{key}: {value}" for key, value in merged.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        exchange = Exchange(name=name, method=method, url=url, request=request)
        started = time.monotonic()
        try:
            exchange.raw = self._transfer(request)
        except OSError as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
        exchange.elapsed = time.monotonic() - started
        if exchange.raw:
            _parse(exchange)
            for key, value in exchange.headers:
                if key.lower() == "set-cookie":
                    cookie = value.split(";", 1)[0]
                    if "=" in cookie:
                        cname, cvalue = cookie.split("=", 1)
                        self.cookies[cname.strip()] = cvalue.strip()
        self.exchanges.append(exchange)
        return exchange

    def _transfer(self, request: bytes) -> bytes:
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(request)
            chunks: list[bytes] = []
            size = 0
            while size < READ_LIMIT:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)


def _parse(exchange: Exchange) -> None:
    head, _, rest = exchange.raw.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    exchange.status = (
        int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    )
    exchange.reason = status_line[2] if len(status_line) > 2 else ""
    for line in lines[1:]:
        key, _, value = line.partition(":")
        exchange.headers.append((key.strip(), value.strip()))
    if (exchange.header("transfer-encoding") or "").lower() == "chunked":
        exchange.body = dechunk(rest)
    else:
        length = exchange.header("content-length")
        exchange.body = rest[: int(length)] if length and length.isdigit() else rest


def dechunk(data: bytes) -> bytes:
    """The payload of a chunked body (tolerates a stream cut short)."""
    out = bytearray()
    position = 0
    while position < len(data):
        end = data.find(b"\r\n", position)
        if end < 0:
            break
        size_text = data[position:end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[end + 2 : end + 2 + size]
        position = end + 2 + size + 2
    return bytes(out)
