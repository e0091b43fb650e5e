"""`CurlTransport` over loopback HTTP against a small aiohttp site: one cookie jar across all of
its libcurl handles (and none shared between transports), the browser's headers, redirects, the
answer cap, timeouts, connection failures, the in-flight cap, and streamed bodies read line by
line or stopped early."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from batchgpt.emulator.server import serving_in_thread
from batchgpt.errors import BadResponseError, RequestTimeoutError, TransportError
from batchgpt.providers.transport import CurlTransport, read_headers


@dataclass
class Site:
    """What the test site saw: the request headers in order, the most requests at once, and
    how many endless streams ran to their end."""

    url: str = ""
    headers: list[dict[str, str]] = field(default_factory=list)
    raw: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    streams_cut: int = 0
    streams_finished: int = 0


def _app(site: Site) -> web.Application:
    async def record(request: web.Request) -> None:
        site.headers.append({k.lower(): v for k, v in request.headers.items()})

    async def set_cookie(request: web.Request) -> web.Response:
        await record(request)
        response = web.Response(text="set")
        response.set_cookie("jar", request.query["value"])
        return response

    async def echo(request: web.Request) -> web.Response:
        await record(request)
        form = await request.post()
        body = f"{request.method} {dict(request.query)} {dict(form)}"
        return web.Response(text=body, headers={"X-Twice": "a"}, content_type="text/plain")

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        site.in_flight += 1
        site.most_in_flight = max(site.most_in_flight, site.in_flight)
        await asyncio.sleep(float(request.query.get("seconds", "0.2")))
        site.in_flight -= 1
        return web.Response(text="late")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/echo?from=moved", headers={"X-Hop": "first"})

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.query["bytes"]))

    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(b"x" * int(request.query["bytes"]))
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def raw(request: web.Request) -> web.Response:
        site.raw.append(list(request.raw_headers))
        return web.Response(body=await request.read())

    async def lines(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        # line ends split across pieces: "\r" ends one piece, its "\n" starts the next
        for piece in (b"data: one\r", b"\ndata: tw", b"o\n\n", b"data: three\r\n\r\n", b"tail"):
            await response.write(piece)
            await asyncio.sleep(0.01)
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(500):
                await response.write(b"data: more\n\n")
                await asyncio.sleep(0.01)
            site.streams_finished += 1
        except (ConnectionResetError, asyncio.CancelledError):
            site.streams_cut += 1
            raise
        return response

    app = web.Application()
    app.router.add_get("/cookie", set_cookie)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/slow", slow)
    app.router.add_get("/moved", moved)
    app.router.add_get("/big", big)
    app.router.add_get("/gzipped", gzipped)
    app.router.add_post("/raw", raw)
    app.router.add_get("/lines", lines)
    app.router.add_get("/endless", endless)
    return app


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site()

    def runner() -> web.AppRunner:
        return web.AppRunner(_app(site), handle_signals=False)

    with serving_in_thread(runner, "transport test site") as port:
        site.url = f"http://127.0.0.1:{port}"
        yield site


def _transport(**settings: object) -> CurlTransport:
    options: dict[str, object] = {
        "headers": {"origin": "http://site", "accept": "*/*"},
        "browser": "chrome",
        "proxy": None,
        "timeout": 10.0,
        "max_answer_bytes": 1 << 20,
        "max_clients": 8,
        **settings,
    }
    return CurlTransport(**options)  # type: ignore[arg-type]


async def test_one_cookie_jar_across_handles_and_none_shared_between_transports(site) -> None:
    first, second = _transport(), _transport()
    try:
        await first.request("GET", site.url + "/cookie", params={"value": "one"})
        await second.request("GET", site.url + "/cookie", params={"value": "two"})
        # concurrent POSTs need several handles of another kind: each carries the jar's cookie
        await asyncio.gather(
            *(first.request("POST", site.url + "/echo", data={"n": str(n)}) for n in range(6)),
            second.request("GET", site.url + "/echo"),
        )
    finally:
        await first.close()
        await second.close()
    cookies = [headers.get("cookie") for headers in site.headers[2:]]
    assert sorted(cookies, key=str) == ["jar=one"] * 6 + ["jar=two"]


async def test_a_browser_s_headers_the_session_s_and_the_request_s(site) -> None:
    transport = _transport()
    try:
        await transport.request("GET", site.url + "/echo", headers={"accept": "text/event-stream"})
        await transport.request("POST", site.url + "/echo", data={"a": "1"})
    finally:
        await transport.close()
    streamed, posted = site.headers
    assert "Chrome/" in streamed["user-agent"] and "sec-ch-ua" in streamed
    assert streamed["accept"] == "text/event-stream"  # the request's header wins
    assert posted["accept"] == "*/*" and posted["origin"] == "http://site"
    assert "expect" not in posted
    assert posted["content-type"] == "application/x-www-form-urlencoded"


async def test_without_a_browser_only_the_given_headers_and_the_bytes_as_they_are(site) -> None:
    """The OpenAI backend's shape: no impersonation, a JSON body (a NUL inside stays)."""
    headers = {"content-type": "application/json", "user-agent": "batchgpt/test"}
    transport = _transport(browser=None, headers=headers)
    try:
        status, _, body = await transport.request("POST", site.url + "/raw", data=b'{"a":"\x00"}')
    finally:
        await transport.close()
    assert (status, body) == (200, b'{"a":"\x00"}')
    (sent,) = site.raw
    names = [name.lower() for name, _ in sent]
    assert sorted(names) == [
        b"accept-encoding",
        b"content-length",
        b"content-type",
        b"host",
        b"user-agent",
    ]
    assert dict(sent)[b"user-agent"] == b"batchgpt/test"


async def test_a_compressed_answer_is_decoded_and_capped_as_decoded(site) -> None:
    transport = _transport(max_answer_bytes=1000)
    try:
        gzipped = site.url + "/gzipped"
        status, _, body = await transport.request("GET", gzipped, params={"bytes": "900"})
        assert (status, body) == (200, b"x" * 900)
        # ~300 bytes on the wire, 300,000 decoded: the cap is on what would be held
        with pytest.raises(BadResponseError, match="larger than 1000 bytes"):
            await transport.request("GET", gzipped, params={"bytes": "300000"})
    finally:
        await transport.close()


async def test_a_url_is_sent_percent_encoded(site) -> None:
    """A space or non-ASCII in a URL (as pasted from a browser) is encoded, as curl_cffi did:
    libcurl refuses the space itself."""
    transport = _transport()
    try:
        status, _, body = await transport.request("GET", site.url + "/echo?q=a b&r=ñ")
    finally:
        await transport.close()
    assert (status, body) == (200, "GET {'q': 'a b', 'r': 'ñ'} {}".encode())


async def test_a_whole_request_gets_status_headers_and_body(site) -> None:
    transport = _transport()
    try:
        status, headers, body = await transport.request(
            "POST", site.url + "/echo", params={"q": "é &"}, data={"f": "v w"}
        )
        moved = await transport.request("GET", site.url + "/moved")
    finally:
        await transport.close()
    assert (status, body) == (200, "POST {'q': 'é &'} {'f': 'v w'}".encode())
    assert headers["content-type"].startswith("text/plain") and headers["x-twice"] == "a"
    status, headers, body = moved  # the redirect is followed; its own headers are gone
    assert (status, body) == (200, b"GET {'from': 'moved'} {}")
    assert "x-hop" not in headers


def test_read_headers_keeps_the_last_response_and_joins_repeats() -> None:
    block = (
        b"HTTP/1.1 302 Found\r\nLocation: /x\r\nX-Hop: 1\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Long: one\r\n two\r\n\r\n"
    )
    assert read_headers(block) == {"set-cookie": "a=1, b=2", "x-long": "one two"}
    # a proxy's tunnel reply comes first: not the site's
    tunnel = b"HTTP/1.1 200 Connection established\r\nX-Proxy: t\r\n\r\n"
    assert read_headers(tunnel + b"HTTP/2 200\r\ncontent-type: x\r\n\r\n") == {"content-type": "x"}
    # a server that ends its lines with a bare newline is read the same
    assert read_headers(b"HTTP/1.1 200 OK\nContent-Type: text/event-stream\n\n") == {
        "content-type": "text/event-stream"
    }


async def test_a_get_with_a_form_is_refused_before_anything_is_sent(site) -> None:
    transport = _transport()
    try:
        with pytest.raises(ValueError, match="a GET sends no form"):
            await transport.request("GET", site.url + "/echo", data={"a": "1"})
        status, _, body = await transport.request("GET", site.url + "/echo")
    finally:
        await transport.close()
    assert (status, body) == (200, b"GET {} {}")
    assert len(site.headers) == 1


async def test_failures_are_provider_errors_and_the_handle_serves_again(site) -> None:
    transport = _transport(max_answer_bytes=1000, timeout=0.3)
    try:
        with pytest.raises(BadResponseError, match="larger than 1000 bytes"):
            await transport.request("GET", site.url + "/big", params={"bytes": "5000"})
        idle = transport._idle[("GET", False, ())]
        (handle,) = idle
        with pytest.raises(RequestTimeoutError, match=r"GET .*/slow timed out after 0.3 s"):
            await transport.request("GET", site.url + "/slow", params={"seconds": "2"})
        status, _, body = await transport.request("GET", site.url + "/big", params={"bytes": "9"})
        assert (status, body) == (200, b"x" * 9)
        assert idle == [handle]  # the one handle served through both failures
        with pytest.raises(BadResponseError, match="larger than 1000 bytes"):
            reply = await transport.stream("GET", site.url + "/big", params={"bytes": "5000"})
            try:  # libcurl knows the length: the stream fails at once, or else while read
                await reply.read()
            finally:
                await reply.aclose()
    finally:
        await transport.close()
    closed = _transport()
    try:
        with pytest.raises(TransportError, match=r"GET http://127.0.0.1:9/ failed: .*"):
            await closed.request("GET", "http://127.0.0.1:9/")
    finally:
        await closed.close()


async def test_no_more_than_max_clients_at_once(site) -> None:
    transport = _transport(max_clients=3)
    try:
        await asyncio.gather(*(transport.request("GET", site.url + "/slow") for _ in range(9)))
    finally:
        await transport.close()
    assert site.most_in_flight == 3


async def test_a_stream_is_read_line_by_line_across_its_pieces(site) -> None:
    transport = _transport()
    try:
        reply = await transport.stream("GET", site.url + "/lines")
        assert reply.status == 200 and reply.headers["content-type"] == "text/event-stream"
        lines = [line async for line in reply.aiter_lines()]
        await reply.aclose()
    finally:
        await transport.close()
    assert lines == [b"data: one", b"data: two", b"", b"data: three", b"", b"tail"]


async def test_a_stream_closed_early_stops_its_transfer(site) -> None:
    transport = _transport(max_clients=1)
    try:
        reply = await transport.stream("GET", site.url + "/endless")
        async for line in reply.aiter_lines():
            assert line == b"data: more"
            break
        await reply.aclose()
        # the one slot is free again and a new handle serves
        status, _, _ = await transport.request("GET", site.url + "/echo")
        assert status == 200
        # the server saw the stream cut long before its 5 s end, the transport still open
        for _ in range(100):
            if site.streams_cut:
                break
            await asyncio.sleep(0.02)
        assert (site.streams_cut, site.streams_finished) == (1, 0)
    finally:
        await transport.close()
