"""`--log-format json` (or BATCHGPT_LOG_FORMAT=json): every line on stderr is one JSON object.

Tried as cron runs a job: as `nobody`, no TTY, no HOME, a read-only working folder, stdin closed,
a bare environment; every line of stderr is parsed: progress, warnings, the summary, every
`error` line (the exit-75 refusal, a halted site, a usage error from batchgpt or from Click).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from support import (
    AS_NOBODY,
    CLI_TIMEOUT,
    nobody_owns,
    public_tmp_fixture,  # noqa: F401  (the `public_tmp` fixture)
    wait_for,
    write_prompts,
)

from batchgpt.logs import LOG_FORMAT_ENVVAR

CRON_ENV = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "nobody"}


class CronJob:
    """Runs `batchgpt run` the way cron does, in folders `nobody` may (job) or may not (cwd)
    write; `lines` keeps every stderr line of every run."""

    def __init__(self, root: Path, url: str) -> None:
        self.job, self.cwd = root / "job", root / "cwd"
        self.job.mkdir()
        self.cwd.mkdir(mode=0o555)
        nobody_owns(self.job)
        self.prompts, self.output = self.job / "prompts.jsonl", self.job / "out.jsonl"
        self.url = url
        self.lines: list[str] = []

    def argv(self, *options: str) -> list[str]:
        run = [sys.executable, "-m", "batchgpt", "run", str(self.prompts), "-o", str(self.output)]
        return [*AS_NOBODY, *run, "--base-url", self.url, *options]

    def start(self, *options: str, json_by: str = "flag") -> subprocess.Popen[str]:
        env = {**CRON_ENV, "PYTHONDONTWRITEBYTECODE": "1"}
        if json_by == "flag":
            options = ("--log-format", "json", *options)
        else:
            env[LOG_FORMAT_ENVVAR] = "json"
        assert "HOME" not in env
        return subprocess.Popen(
            self.argv(*options),
            cwd=self.cwd,
            env=env,
            stdin=None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.close(0),  # stdin closed, as `<&-`
        )

    def run(self, *options: str, json_by: str = "flag") -> tuple[int, list[dict[str, Any]]]:
        process = self.start(*options, json_by=json_by)
        out, err = process.communicate(timeout=CLI_TIMEOUT)
        assert out == ""
        return process.returncode, self.parse(err)

    def parse(self, err: str) -> list[dict[str, Any]]:
        """Every stderr line as its JSON object (failing on the first that is not one)."""
        entries = []
        for line in err.splitlines():
            self.lines.append(line)
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"not a line of JSON: {line!r}\n{err}") from None
            assert isinstance(entry, dict) and {"time", "level", "event"} <= set(entry), line
            entries.append(entry)
        return entries


def errors(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry["event"].startswith("error: ")]


@pytest.fixture
def cron(emulator, public_tmp: Path) -> CronJob:
    return CronJob(public_tmp, emulator.url)


@pytest.mark.emulator_config(latency=0.25)
def test_a_cron_run_in_json_writes_only_json_lines_to_stderr(emulator, cron: CronJob) -> None:
    write_prompts(cron.prompts, 60)
    with cron.prompts.open("a") as stream:
        stream.write("not json\n")

    # A long run, a second run refused while it holds the lock, then SIGTERM.
    holder = cron.start("--concurrency", "1")
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(holder.stderr), daemon=True)
    reader.start()
    assert wait_for(lambda: any('"progress ' in line for line in seen), 40), seen
    code, refused = cron.run(json_by="variable")
    assert code == 75
    assert errors(refused)[0]["exit_code"] == 75
    assert "another run holds" in errors(refused)[0]["event"]
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(CLI_TIMEOUT) == 143
    reader.join(10)
    stopped = cron.parse("".join(seen))
    progress = [entry for entry in stopped if entry["event"].startswith("progress ")]
    assert progress and progress[0]["written"] > 0
    assert any(e["level"] == "warning" and "SIGTERM" in e["event"] for e in stopped)
    assert [e["summary"] for e in stopped if "summary" in e] == ["this_run", "output"]

    # A resume from a torn output without its checkpoint: warnings, error records, the summary.
    with cron.output.open("ab") as stream:
        stream.write(b'{"id": "torn')
    Path(f"{cron.output}.ckpt").unlink()
    emulator.configure(latency=0.0)
    code, resumed = cron.run(json_by="variable")
    assert code == 1  # the line that is not JSON is an error record
    warned = [e["event"] for e in resumed if e["level"] == "warning"]
    assert any("no checkpoint" in event for event in warned)
    assert any("cut a torn tail" in event for event in warned)
    summary = {e["summary"]: e for e in resumed if "summary" in e}
    assert summary["output"]["ok"] == 60
    assert summary["output"]["errors"] == {"invalid_input": 1}

    # Refusals: --restart without --yes and stdin closed; a site that stopped the run.
    code, restart = cron.run("--restart")
    assert code == 2
    assert "add --yes" in errors(restart)[0]["event"]
    emulator.configure(bots="")  # the chat is gone from the page
    with cron.prompts.open("a") as stream:
        stream.write(json.dumps({"id": "late", "prompt": "one more"}) + "\n")
    code, halted = cron.run()
    assert code == 69
    assert errors(halted)[0]["kind"] == "halted"

    assert len(cron.lines) > 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--concurrency", "x"), "Invalid value for '--concurrency'"),
        (("--nope",), "No such option '--nope'"),
        (("--shard-count", "3"), "--shard-count 3 needs the shard index"),
    ],
    ids=["bad-value", "unknown-option", "batchgpt-usage-error"],
)
@pytest.mark.parametrize("json_by", ["flag", "variable"])
def test_usage_errors_are_json_too(
    cron: CronJob, options: tuple[str, ...], message: str, json_by: str
) -> None:
    write_prompts(cron.prompts, 1)
    code, entries = cron.run(*options, json_by=json_by)
    assert code == 2
    [error] = errors(entries)
    assert message in error["event"]
    assert error["exit_code"] == 2
    assert not cron.output.exists()


def test_a_missing_input_argument_is_json(cron: CronJob) -> None:
    env = {**CRON_ENV, LOG_FORMAT_ENVVAR: "json"}
    result = subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "batchgpt", "run"],
        cwd=cron.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    [error] = errors(cron.parse(result.stderr))
    assert "Missing argument 'INPUT'" in error["event"]
    assert error["usage"].startswith("Usage: ")


def test_other_libraries_python_warnings_and_a_crash_are_json_lines_too() -> None:
    script = """
import logging, warnings
from batchgpt.logs import setup_logging, announce
setup_logging("json")
logging.getLogger("asyncio").error("Task exception was never retrieved\\nmore")
warnings.warn("a library is old\\nsecond line", DeprecationWarning, stacklevel=1)
announce("shown at every verbosity", count=3)
raise RuntimeError("a bug")
"""
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        env={**CRON_ENV, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["level"], e.get("logger")) for e in entries] == [
        ("error", "asyncio"),
        ("warning", "py.warnings"),
        ("info", None),
        ("critical", None),
    ]
    assert "a library is old" in entries[1]["event"]
    assert entries[2]["count"] == 3
    assert "RuntimeError: a bug" in entries[3]["traceback"]
