"""Helpers for tests that drive the real `batchgpt` CLI in subprocesses.

The CLI runs as `python -m batchgpt` in a child process, with the BATCHGPT_* variables of the
developer's environment removed, and talks over loopback HTTP to the emulator served from a thread
of the pytest process, so the emulator's counters see every request. Also here: prompt files,
reading and checking results files, bounded polling, and a tiny HTTP forward proxy that counts
what it carries.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from batchgpt.emulator import expected_answer
from batchgpt.emulator.server import serving_in_thread
from batchgpt.providers import ChatGptEs

CLI = [sys.executable, "-m", "batchgpt"]
#: Run a test once against each chat generation (the `emulator` fixture's `chat` setting).
BOTH_CHATS = pytest.mark.parametrize("emulator", ["legacy", "aipkit"], indirect=True)
#: Longest any single CLI invocation may take in these tests.
CLI_TIMEOUT = 90.0


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: ours without BATCHGPT_* settings, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BATCHGPT_")
        and key not in ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


#: Runs a command as `nobody` (tests run as root, whom permissions do not stop). It keeps only
#: CAP_DAC_READ_SEARCH, to reach the Python under /root; writing obeys permissions as for anyone.
AS_NOBODY = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--inh-caps=+dac_read_search",
    "--ambient-caps=+dac_read_search",
]


@pytest.fixture(name="public_tmp")
def public_tmp_fixture() -> Iterator[Path]:
    """A temp folder that `nobody` can reach (pytest's own are private to root); import
    `public_tmp_fixture` into a test module to use it."""
    folder = Path(tempfile.mkdtemp(prefix="batchgpt-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def nobody_owns(*paths: Path) -> None:
    """Make `nobody` the owner of `paths` (folders it may write in)."""
    for path in paths:
        os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)


def run_args(input_path: Path, url: str, *extra: str) -> list[str]:
    """`batchgpt run INPUT --base-url URL --no-progress EXTRA…`."""
    return [*CLI, "run", str(input_path), "--base-url", url, "--no-progress", *extra]


def batchgpt(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = CLI_TIMEOUT,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run a full command line (see `run_args`) to its end and capture its text output."""
    return subprocess.run(
        args,
        env=env or cli_env(),
        cwd=cwd,
        timeout=timeout,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        **kwargs,
    )


def run_cli(*args: str | Path, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`batchgpt ARGS` to its end, output captured as text."""
    return batchgpt([*CLI, *map(str, args)], timeout=timeout)


def run_job(
    input_path: Path, url: str, *options: str | Path, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """`batchgpt run INPUT --base-url URL --no-progress OPTIONS` to its end."""
    return batchgpt(run_args(input_path, url, *map(str, options)), timeout=timeout)


def start(
    args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, **kwargs: Any
) -> subprocess.Popen[str]:
    """Start a command line in the background, its output captured."""
    return subprocess.Popen(
        args,
        env=env or cli_env(),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        **kwargs,
    )


@pytest.fixture(name="spawn")
def spawn_fixture() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """`spawn(args)`: `start` for one test; whatever still runs when the test ends is killed.

    Import `spawn_fixture` into a test module to use it."""
    started: list[subprocess.Popen[str]] = []

    def spawn_(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        started.append(start(args, **kwargs))
        return started[-1]

    yield spawn_
    for process in started:
        if process.poll() is None:
            process.kill()  # SIGKILL also ends a process left stopped by SIGSTOP
        process.communicate(timeout=10)


def finish(process: subprocess.Popen[str], timeout: float = CLI_TIMEOUT) -> tuple[int, str, str]:
    """Wait for a background process (killing it past `timeout`): exit code, stdout, stderr."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"{process.args} did not end within {timeout} s:\n{err}") from None
    return process.returncode, out, err


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# prompts ----------------------------------------------------------------------------------------


def prompt_text(record_id: str) -> str:
    return f"Question {record_id}: what is {len(record_id)} times seven?"


def write_prompts(path: Path, count: int, *, prefix: str = "q", extra: str = "") -> list[str]:
    """`count` prompt lines with ids prefix0…; returns the ids."""
    ids = [f"{prefix}{n}" for n in range(count)]
    path.write_text(
        "".join(json.dumps({"id": i, "prompt": prompt_text(i) + extra}) + "\n" for i in ids),
        encoding="utf-8",
    )
    return ids


def message_of(prompt: str) -> str:
    """The `message` form field the emulator receives for a one-prompt line."""
    return ChatGptEs.format_message([{"role": "user", "content": prompt}])


def answer_of(record_id: str, extra: str = "") -> str:
    return expected_answer(message_of(prompt_text(record_id) + extra))


def write_jsonl(path: Path, lines: Iterable[dict[str, Any] | str | bytes]) -> Path:
    """Write objects as JSON lines; str/bytes items are written as they are (plus a newline)."""
    with path.open("wb") as stream:
        for line in lines:
            if isinstance(line, dict):
                stream.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
            elif isinstance(line, str):
                stream.write(line.encode() + b"\n")
            else:
                stream.write(line + b"\n")
    return path


def input_messages(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages an input line of any shape asks about."""
    if "prompt" in obj:
        return [{"role": "user", "content": obj["prompt"]}]
    if "messages" in obj:
        return obj["messages"]
    return obj["body"]["messages"]


def sent_message(obj: dict[str, Any]) -> str:
    """The `message` form field the client must send for an input line."""
    return ChatGptEs.format_message(input_messages(obj))


def mixed_prompts(count: int, *, tag: str = "p") -> list[dict[str, Any]]:
    """`count` distinct prompts cycling through the three input shapes."""
    lines: list[dict[str, Any]] = []
    for n in range(count):
        text = f"question {tag}{n}: what is {n} squared?"
        shape = n % 3
        if shape == 0:
            lines.append({"id": f"{tag}{n}", "prompt": text})
        elif shape == 1:
            lines.append(
                {
                    "id": f"{tag}{n}",
                    "messages": [
                        {"role": "system", "content": f"Be brief ({n})."},
                        {"role": "user", "content": text},
                    ],
                    "model": "gpt-4o-mini",
                }
            )
        else:
            lines.append(
                {
                    "custom_id": f"{tag}{n}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4", "messages": [{"role": "user", "content": text}]},
                }
            )
    return lines


#: The --max-line-bytes to read a `mixed_file` with: its one long line is just over it.
MAX_LINE = 2000


def mixed_file(tmp: Path) -> tuple[Path, dict[int, dict[str, Any]], dict[int, str]]:
    """Good lines of every shape interleaved with every kind of bad line.

    Returns the path, the good lines by line number and the expected reasons by line number.
    """
    good = mixed_prompts(12, tag="m")
    good.append({"prompt": "no id: my line number is my id"})
    good.append(
        {
            "custom_id": "extra",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "x"}],
                "temperature": 0,
            },
            "note": "kept",
        }
    )
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"id": "np"}', "no prompt or messages"),
        (b'{"id": "ep", "prompt": "  "}', "prompt is empty"),
        (b'{"id": "wt", "prompt": 42}', "prompt must be a string"),
        (b'{"id": "ur", "messages": [{"role": "robot", "content": "x"}]}', "unknown role"),
        (b'{"id": "um", "prompt": "x", "model": "gpt-5"}', "unknown model"),
        (b'{"id": "m0", "prompt": "duplicate of the first line"}', "duplicate id 'm0'"),
        (b'{"id": "iu", "prompt": "caf\xe9"}', "invalid UTF-8"),
        (
            json.dumps({"prompt": "y" * MAX_LINE, "id": "long"}).encode(),
            f"longer than {MAX_LINE} bytes",
        ),
        (
            json.dumps(
                {
                    "custom_id": "emb",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"input": "x"},
                }
            ).encode(),
            "is not supported",
        ),
        (
            json.dumps(
                {
                    "id": "img",
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
                            ],
                        }
                    ],
                }
            ).encode(),
            "only text parts",
        ),
    ]
    chunks: list[bytes] = [b"\xef\xbb\xbf"]  # a BOM
    good_lines: dict[int, dict[str, Any]] = {}
    reasons: dict[int, str] = {}
    number = 0
    for n in range(max(len(good), len(bad))):
        if n < len(good):
            number += 1
            chunks.append(json.dumps(good[n]).encode() + b"\r\n")
            good_lines[number] = good[n]
        if n < len(bad):
            number += 1
            chunks.append(bad[n][0] + b"\n")
            reasons[number] = bad[n][1]
        if n % 4 == 0:
            number += 1
            chunks.append(b"   \n")
    path = tmp / "prompts.jsonl"
    path.write_bytes(b"".join(chunks))
    return path, good_lines, reasons


def line_id(obj: dict[str, Any], line: int) -> Any:
    """The id a run gives an input line."""
    return obj.get("id", obj.get("custom_id", line))


# results ----------------------------------------------------------------------------------------


def complete_lines(path: Path) -> int:
    """How many complete lines `path` holds now (0 when it does not exist)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file ([] when there is none); fails on a torn or non-JSON line."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with a torn line: {data[-80:]!r}"
    records = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            records.append(json.loads(raw))
        except ValueError as exc:
            raise AssertionError(f"{path}:{number} is not JSON: {raw[:80]!r}") from exc
    return records


def assert_exactly_once(
    path: Path, ids: list[str], *, all_ok: bool = True, extra: str = ""
) -> list[dict[str, Any]]:
    """Every id in `ids` appears exactly once in `path`, and nothing else does."""
    records = read_results(path)
    seen = [record["id"] for record in records]
    assert sorted(seen) == sorted(ids), (
        f"{path}: {len(seen)} lines for {len(ids)} ids; "
        f"duplicates {sorted({i for i in seen if seen.count(i) > 1})[:10]}, "
        f"missing {sorted(set(ids) - set(seen))[:10]}"
    )
    if all_ok:
        for record in records:
            assert record["status"] == "ok", record
            assert record["response"] == answer_of(record["id"], extra), record
    return records


# a forward proxy --------------------------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class ForwardProxy:
    """A plain-HTTP forward proxy: absolute-form requests are sent on; `requests` counts them.
    With `via`, it names itself in a `Via` header, as real proxies do (the emulator can ban it).
    With `upstream` it is a reverse proxy instead: a site of its own whose every request is sent
    on to `upstream` (Host unchanged, so the pages name the proxy's address)."""

    def __init__(self, upstream: str | None = None, *, via: str | None = None) -> None:
        self.via = via
        self.requests = 0
        self.upstream = upstream
        self._client: aiohttp.ClientSession | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests += 1
        if self._client is None:
            self._client = aiohttp.ClientSession(
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        # absolute-form: the whole target URL is in the request line
        target = str(request.url) if self.upstream is None else self.upstream + request.path_qs
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        if self.via:
            headers.append(("Via", self.via))
        body = await request.read()
        async with self._client.request(
            request.method,
            target,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        ) as upstream:
            payload = await upstream.read()
            reply = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP]
        response = web.Response(status=upstream.status, body=payload)
        for key, value in reply:
            response.headers.add(key, value)
        return response

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


@contextmanager
def running_proxy(proxy: ForwardProxy | None = None) -> Iterator[tuple[ForwardProxy, str]]:
    """Serve `proxy` (a new `ForwardProxy` by default) on a free loopback port from a thread;
    yield it and its URL."""
    proxy = proxy or ForwardProxy()
    with serving_in_thread(
        lambda: web.ServerRunner(web.Server(proxy.handle), handle_signals=False),
        "forward proxy",
        on_close=proxy.close,
    ) as port:
        yield proxy, f"http://127.0.0.1:{port}"
