"""`python -m batchgpt.g4f_api`: gpt4free's own API server serving batchgpt's `ChatGptEs`, reached
with the official `openai` SDK, the launcher in a subprocess and the emulator in this process.

g4f 8.8.6 downloads https://g4f.dev/dist/js/providers.json when `g4f.api` is imported and caches
it for the day under its config folder; these tests give the server a config folder of its own
with that day's list already there (naming no provider but g4f's fallback "default", pointed at a
closed port), so it starts without the internet.
"""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from support import (
    assert_exactly_once,
    cli_env,
    finish,
    message_of,
    run_job,
    start,
    wait_for,
    write_prompts,
)

from batchgpt.emulator import EmulatorConfig, expected_answer, running_emulator
from batchgpt.g4f_api import INSTALL_HINT, PROVIDER_LIST, provider_at
from batchgpt.providers import ChatGptEs

LAUNCHER = [sys.executable, "-m", "batchgpt.g4f_api"]
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def g4f_env(config_dir: Path, **extra: str) -> dict[str, str]:
    """The launcher's environment: g4f keeps its config, cookies and caches in `config_dir`."""
    return cli_env(G4F_CONFIG_DIR=str(config_dir), **extra)


def seed_provider_list(config_dir: Path, closed_port: int) -> None:
    """g4f's cached provider list for today and tomorrow (a run may cross midnight)."""
    listing = {
        "providers": {"default": {"baseUrl": f"http://127.0.0.1:{closed_port}/v1"}},
        "defaultModels": {},
    }
    today = datetime.date.today()
    for day in (today, today + datetime.timedelta(days=1)):
        path = config_dir / "cache" / ".models" / day.isoformat() / "providers.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(listing))


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Served:
    """The emulator (stats) and g4f's API server serving ChatGptEs pointed at it."""

    def __init__(self, emulator, port: int) -> None:
        self.emulator = emulator
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/v1"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.api_url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config_dir = tmp_path_factory.mktemp("g4f")
    seed_provider_list(config_dir, free_port())
    port = free_port()
    with running_emulator(EmulatorConfig(stream=True), keep_forms=True) as (emulator, url):
        process = start(
            [*LAUNCHER, "--port", str(port), "--base-url", url],
            env=g4f_env(config_dir),
            cwd=config_dir,
        )
        try:
            server = Served(emulator, port)
            started = wait_for(
                lambda: answers(server.api_url) or process.poll() is not None, START_TIMEOUT, 0.1
            )
            if not started or process.poll() is not None:
                process.kill()
                raise AssertionError(f"g4f's API server did not start:\n{process.communicate()}")
            yield server
        finally:
            process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


# the API server, through the openai SDK -----------------------------------------------------------


def test_openai_sdk_chat_completion(served: Served) -> None:
    prompt = "Name three rivers of Spain."
    completion = served.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
    )
    assert completion.choices[0].message.content == expected_answer(message_of(prompt))
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"
    assert completion.model_extra["provider"] == "ChatGptEs"
    assert completion.usage.completion_tokens > 0
    assert served.emulator.stats.forms[-1]["message"] == message_of(prompt)


def test_openai_sdk_streaming(served: Served) -> None:
    prompt = "Tell me a long story about a lighthouse keeper and the sea."
    stream = served.client().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}], stream=True
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1
    assert "".join(pieces) == expected_answer(message_of(prompt))
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_openai_sdk_streaming(served: Served) -> None:
    prompt = "Tell me a long story about a train that crossed the desert."
    client = openai.AsyncOpenAI(base_url=served.api_url, api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": prompt}], stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
    assert "".join(pieces) == expected_answer(message_of(prompt))
    await client.close()


def test_openai_sdk_auto_model_and_a_conversation(served: Served) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    completion = served.client().chat.completions.create(model="auto", messages=messages)
    sent = ChatGptEs.format_message(messages)
    assert completion.choices[0].message.content == expected_answer(sent)
    assert served.emulator.stats.forms[-1]["message"] == sent


def test_unknown_model_is_an_error_and_nothing_reaches_the_site(served: Served) -> None:
    posts = served.emulator.stats.posts
    with pytest.raises(openai.InternalServerError):
        served.client().chat.completions.create(
            model="gpt-5-ultra", messages=[{"role": "user", "content": "Hola"}]
        )
    assert served.emulator.stats.posts == posts


def test_the_server_listens_on_loopback_only(served: Served) -> None:
    """127.0.0.2 is loopback too, but only a server bound to every address answers there."""
    assert answers(served.api_url)
    assert not answers(f"http://127.0.0.2:{served.port}/v1")


# the whole chain: batchgpt --provider openai → g4f's API server → ChatGptEs → the site ------------


def test_batchgpt_run_through_g4f_api_serving_chatgpt_es(served: Served, tmp_path: Path) -> None:
    """A real server no one here wrote between batchgpt's two backends: every prompt answered
    once, by the site, with its own message, tokens recorded."""
    prompts = tmp_path / "prompts.jsonl"
    ids = write_prompts(prompts, 12)
    asked = served.emulator.stats.answers

    done = run_job(prompts, served.api_url, "--provider", "openai", "--concurrency", "4")

    assert done.returncode == 0, done.stderr
    records = assert_exactly_once(tmp_path / "prompts.results.jsonl", ids)  # the site's answers
    assert served.emulator.stats.answers - asked == len(ids)
    assert all(record["usage"]["completion_tokens"] > 0 for record in records)
    assert "tokens:" in done.stderr


# the launcher ------------------------------------------------------------------------------------


def test_launcher_without_g4f_says_how_to_install_it(tmp_path: Path) -> None:
    """`sys.modules["g4f"] = None` is how Python spells a package that is not installed."""
    script = "import sys; sys.modules['g4f'] = None; from batchgpt.g4f_api import main; main()"
    code, _, err = finish(start([sys.executable, "-c", script], env=g4f_env(tmp_path)))
    assert code == 1
    assert "gpt4free's API server is not installed" in err
    assert INSTALL_HINT in err


def test_launcher_when_g4f_cannot_fetch_its_provider_list(tmp_path: Path, closed_port) -> None:
    proxy = f"http://127.0.0.1:{closed_port}"
    env = g4f_env(tmp_path, HTTPS_PROXY=proxy, https_proxy=proxy)
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    code, _, err = finish(start([*LAUNCHER, "--port", str(free_port())], env=env, cwd=tmp_path))
    assert code == 1
    assert f"importing it fetches {PROVIDER_LIST}" in err


def test_launcher_refuses_a_base_url_without_scheme(tmp_path: Path) -> None:
    code, _, err = finish(start([*LAUNCHER, "--base-url", "chatgpt.es"], env=g4f_env(tmp_path)))
    assert code == 2
    assert "--base-url" in err


def test_provider_at() -> None:
    assert provider_at("https://chatgpt.es/") is ChatGptEs
    pointed = provider_at("http://127.0.0.1:8080/")
    assert issubclass(pointed, ChatGptEs)
    assert pointed.__name__ == "ChatGptEs"
    assert pointed.url == "http://127.0.0.1:8080"
    assert pointed.api_endpoint == "http://127.0.0.1:8080/wp-admin/admin-ajax.php"
    assert ChatGptEs.url == "https://chatgpt.es"
