"""chatgpt.es over HTTPS, as the real site is served: libcurl checks the site's certificate
against the CA bundle the environment names (here a throw-away one, through SSL_CERT_FILE, which
curl_cffi reads), the run answers in both chat generations, and a site whose certificate nothing
vouches for is refused with curl's reason, not answered. Through a proxy, https goes through a
CONNECT tunnel."""

from __future__ import annotations

import select
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from batchgpt.emulator import EmulatorConfig
from batchgpt.emulator.server import app_runner, serving_in_thread
from batchgpt.emulator.site import Emulator
from tests.support import batchgpt, cli_env, read_results, run_args, write_prompts

#: What curl_cffi reads for its CA bundle, first found wins: cleared so only the test's counts.
CA_VARIABLES = ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "site.pem", folder / "site.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextmanager
def _https_emulator(chat: str, cert: Path, key: Path) -> Iterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    emulator = Emulator(EmulatorConfig(chat=chat))
    with serving_in_thread(
        lambda: app_runner(emulator.app), "https emulator", ssl_context=context
    ) as port:
        yield f"https://127.0.0.1:{port}"


def _env(ca: Path | None) -> dict[str, str]:
    env = {k: v for k, v in cli_env().items() if k not in CA_VARIABLES}
    if ca is not None:
        env["SSL_CERT_FILE"] = str(ca)
    return env


@pytest.mark.parametrize("chat", ["legacy", "aipkit"])
def test_a_run_over_https_trusts_the_ca_it_is_given_and_answers(
    chat: str, certificate: tuple[Path, Path], tmp: Path
) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 5)
    with _https_emulator(chat, *certificate) as url:
        result = batchgpt(run_args(prompts, url, "-q"), env=_env(certificate[0]))
    assert result.returncode == 0, result.stderr
    results = read_results(tmp / "prompts.results.jsonl")
    assert [r["status"] for r in results] == ["ok"] * 5


def test_a_certificate_nothing_vouches_for_is_refused(
    certificate: tuple[Path, Path], tmp: Path
) -> None:
    """Without the CA the site is not trusted: the library call fails with curl's reason."""
    code = (
        "import asyncio, sys\n"
        "from batchgpt.providers.chatgpt_es.session import ChatGptEsSession\n"
        "async def main():\n"
        "    async with ChatGptEsSession(sys.argv[1]) as session:\n"
        "        await session.send('hola')\n"
        "asyncio.run(main())\n"
    )
    with _https_emulator("aipkit", *certificate) as url:
        result = subprocess.run(
            [sys.executable, "-c", code, url],
            env=_env(None),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert "TransportError" in result.stderr and "certificate" in result.stderr, result.stderr


class ConnectProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy that only tunnels (CONNECT), as proxies do for https; `tunnels` lists the
    targets it opened."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.tunnels: list[str] = []


class _Tunnel(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head and (piece := self.request.recv(4096)):
            head += piece
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        assert isinstance(self.server, ConnectProxy)
        self.server.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as upstream:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\nX-Proxy: t\r\n\r\n")
            sockets = [self.request, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is self.request else self.request).sendall(data)


def test_https_through_a_proxy_goes_through_a_tunnel(
    certificate: tuple[Path, Path], tmp: Path
) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 5)
    proxy = ConnectProxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        with _https_emulator("aipkit", *certificate) as url:
            address = f"http://127.0.0.1:{proxy.server_address[1]}"
            result = batchgpt(
                run_args(prompts, url, "-q", "--proxy", address), env=_env(certificate[0])
            )
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in read_results(tmp / "prompts.results.jsonl")] == ["ok"] * 5
    assert proxy.tunnels and set(proxy.tunnels) == {url.removeprefix("https://")}
