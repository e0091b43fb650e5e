"""The batchgpt CLI against a real site, and the checks of what it got and what it caused.

A run's answers are held against the fake upstream's log: for each prompt, the upstream request
whose last user message is exactly batchgpt's framing (`ChatGptEs.SYSTEM_PROMPT + " " + prompt`)
says what the plugin was answered, and so what batchgpt must have written; the prompt must occur
once in that request's whole body. The web server's access log, read from the offset taken before
the run, says how many HTTP requests each prompt cost, and how many were refused (a nonce expiry
shows there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batchgpt.providers.chatgpt_es import ChatGptEs
from tests.conformance.wordpress import AccessEntry

AJAX = "/wp-admin/admin-ajax.php"


def make_prompts(tag: str, count: int) -> list[dict[str, str]]:
    """`count` distinct plain prompts; `tag` keeps them apart from other phases' prompts."""
    return [
        {
            "id": f"{tag}-{i:02d}",
            "prompt": f"Conformance {tag} prompt {i:02d}: name one colour and the number {i * 7}.",
        }
        for i in range(1, count + 1)
    ]


def batchgpt(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("BATCHGPT_")}
    return subprocess.run(
        [sys.executable, "-m", "batchgpt", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@dataclass
class ProbeCommand:
    """`batchgpt probe URL`: whether the command exists and what it said."""

    available: bool
    exit_code: int | None = None
    output: str = ""


def probe_command(url: str, cwd: Path) -> ProbeCommand:
    helped = batchgpt("probe", "--help", cwd=cwd, timeout=60)
    if helped.returncode != 0:
        return ProbeCommand(available=False, output=(helped.stderr or helped.stdout).strip()[-300:])
    done = batchgpt("probe", url, cwd=cwd, timeout=300)
    return ProbeCommand(True, done.returncode, (done.stdout + done.stderr).strip()[-3000:])


@dataclass
class CliRun:
    """One `batchgpt run`: its command, exit code, time window and result lines."""

    args: list[str]
    exit_code: int
    started: float
    finished: float
    stderr: str
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def run_batch(
    workdir: Path,
    name: str,
    base_url: str,
    prompts: list[dict[str, str]],
    extra: tuple[str, ...] = (),
    timeout: float = 900,
) -> CliRun:
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / f"{name}.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    output = workdir / f"{name}.results.jsonl"
    args = [
        "run",
        source.name,
        "-o",
        output.name,
        "--base-url",
        base_url,
        "--no-progress",
        "--give-up-after",
        "60",
        "--timeout",
        "60",
        *extra,
    ]
    started = time.time()
    try:
        done = batchgpt(*args, cwd=workdir, timeout=timeout)
        exit_code, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as exc:
        exit_code = -1
        partial = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else ""
        stderr = f"timed out after {timeout:g} s: {partial}"
    finished = time.time()
    results = []
    if output.exists():
        for line in output.read_text().splitlines():
            try:
                results.append(json.loads(line))
            except ValueError:
                continue
    return CliRun(
        ["batchgpt", *args], exit_code, started, finished, stderr.strip()[-4000:], results
    )


def framed(prompt: str) -> str:
    return f"{ChatGptEs.SYSTEM_PROMPT} {prompt}"


@dataclass
class PromptCheck:
    """One prompt: what batchgpt wrote, what the upstream was asked and answered."""

    id: str
    status: str
    response: str | None
    error: dict[str, Any] | None
    expected: str | None
    upstream_requests: int
    framing_ok: bool
    occurrences: int

    @property
    def correct(self) -> bool:
        return self.status == "ok" and self.expected is not None and self.response == self.expected


def check_prompts(
    run: CliRun, prompts: list[dict[str, str]], upstream: list[dict[str, Any]]
) -> list[PromptCheck]:
    results = {str(r.get("id")): r for r in run.results}
    checks = []
    for prompt in prompts:
        text, message = prompt["prompt"], framed(prompt["prompt"])
        asked = [e for e in upstream if any(text in u for u in e.get("user_messages") or [])]
        exact = [e for e in asked if (e.get("user_messages") or [""])[-1] == message]
        chosen = exact[-1] if exact else (asked[-1] if asked else None)
        body = json.dumps(chosen.get("body"), ensure_ascii=False) if chosen else ""
        result = results.get(prompt["id"], {})
        checks.append(
            PromptCheck(
                id=prompt["id"],
                status=str(result.get("status", "missing")),
                response=result.get("response"),
                error=result.get("error"),
                expected=chosen.get("answer") if chosen else None,
                upstream_requests=len(asked),
                framing_ok=bool(exact),
                occurrences=body.count(text),
            )
        )
    return checks


@dataclass
class Traffic:
    """A run as the server saw it: requests by kind and status, ajax actions, nonces refused."""

    total: int
    kinds: dict[str, int]
    statuses: dict[str, int]
    actions: dict[str, int] = field(default_factory=dict)
    nonce_failures: dict[str, int] = field(default_factory=dict)

    def per_prompt(self, prompts: int) -> float:
        return self.total / prompts if prompts else 0.0

    def breakdown(self) -> str:
        return ", ".join(f"{v} {k}" for k, v in sorted(self.kinds.items()))


def request_kind(entry: AccessEntry) -> str:
    path, _, query = entry.target.partition("?")
    if path == AJAX:
        if entry.method == "GET":
            action = dict(p.partition("=")[::2] for p in query.split("&")).get("action", "?")
            return f"GET ajax {action}"
        return f"{entry.method} ajax"
    return f"{entry.method} page" if entry.method == "GET" else f"{entry.method} {path}"


def traffic(entries: list[AccessEntry], events: list[dict[str, Any]]) -> Traffic:
    """Count a run's access log entries and WordPress events (both read from offsets taken
    before it started)."""
    kinds = Counter(request_kind(e) for e in entries)
    statuses = Counter(f"{request_kind(e)} {e.status}" for e in entries)
    actions = Counter(
        f"{e.get('method')} {e.get('action')}" for e in events if e["event"] == "ajax"
    )
    refused = Counter(str(e.get("action")) for e in events if e["event"] == "nonce_failed")
    return Traffic(len(entries), dict(kinds), dict(statuses), dict(actions), dict(refused))


def summarise(checks: list[PromptCheck]) -> dict[str, Any]:
    count = len(checks)
    return {
        "prompts": count,
        "answered": sum(c.status == "ok" for c in checks),
        "correct": sum(c.correct for c in checks),
        "framing_ok": sum(c.framing_ok for c in checks),
        "once": sum(c.occurrences == 1 for c in checks),
        "reached_upstream": sum(c.upstream_requests > 0 for c in checks),
        "upstream_requests": sum(c.upstream_requests for c in checks),
        "errors": dict(Counter(str((c.error or {}).get("kind")) for c in checks if c.error)),
        "first_error": next((c.error for c in checks if c.error), None),
        "checks": [asdict(c) | {"correct": c.correct} for c in checks],
    }
