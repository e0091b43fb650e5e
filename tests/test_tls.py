"""chatgpt.es over HTTPS, as the real site is served: libcurl checks the site's certificate
against the CA bundle the environment names (here a throw-away one, through SSL_CERT_FILE, which
curl_cffi reads), the run answers in both chat generations, and a site whose certificate nothing
vouches for is refused with curl's reason, not answered."""

from __future__ import annotations

import ssl
import subprocess
import sys
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
