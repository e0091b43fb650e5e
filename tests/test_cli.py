"""cli.py through the real `batchgpt` command in a subprocess: `--help` shows every declared
option with its variable and default, `--version`, every `JobError` ends as its one-line message
and exit code (never a traceback), and `--dry-run` shows every option with credentials hidden.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib.metadata import version
from pathlib import Path

import pytest
from support import CLI, batchgpt, cli_env, run_args, run_cli, write_jsonl, write_prompts

from batchgpt.checkpoint import JobLock
from batchgpt.config import OPTIONS, Option, RunConfig, option, run_options
from batchgpt.errors import (
    CorruptOutputError,
    InputChangedError,
    JobError,
    JobLockedError,
    MergeConflictError,
    OutputWriteError,
    SiteHaltedError,
    SiteUnreachableError,
    UsageError,
)
from batchgpt.providers import BACKENDS, backend_class

# --help and --version ---------------------------------------------------------------------------


def help_entries(text: str) -> dict[str, str]:
    """Each option's entry in Click's help, by its long flag, with whitespace collapsed."""
    entries: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        if match := re.match(r"  (?:-\w, )?(--[\w-]+)", line):
            flag = match[1]
            entries[flag] = line
        elif flag and line.startswith("   "):
            entries[flag] += " " + line
        else:
            flag = None
    return {key: " ".join(value.split()) for key, value in entries.items()}


def shown_default(declared: Option) -> str | None:
    if declared.default_text is not None:
        return declared.default_text
    value = declared.default
    return None if value is None or value is False or value == () else str(value)


def check_help_entry(entries: dict[str, str], declared: Option) -> None:
    entry = entries[declared.flag]
    assert " ".join(declared.help.split()) in entry, entry
    assert f"[env var: {', '.join(declared.envvars)}]" in entry, entry
    default = shown_default(declared)
    if default is None:
        assert "[default:" not in entry, entry
    else:
        assert f"[default: {default}]" in entry, entry


def test_run_help_lists_every_option_with_its_variable_and_default() -> None:
    shown = run_cli("run", "--help")
    assert shown.returncode == 0, shown.stderr
    entries = help_entries(shown.stdout)
    declared = [o for o in run_options() if o.on_command_line]
    for o in declared:
        check_help_entry(entries, o)
    extra = set(entries) - {o.flag for o in declared}
    assert extra == {"--log-format", "--quiet", "--verbose", "--help"}
    assert "--input" not in entries  # INPUT is the argument


def test_validate_help_shares_the_declarations_of_run() -> None:
    entries = help_entries(run_cli("validate", "--help").stdout)
    for name in ("provider", "model", "max_line_bytes"):
        check_help_entry(entries, option(name))


def test_help_loads_no_http_client() -> None:
    """`--help` is every user's first command and cron's cheapest: the run options of every
    backend are declared without loading a backend's client (curl_cffi, its session, aiohttp) or
    anything only a request needs (the package metadata, email's date parser)."""
    script = (
        "import sys, contextlib, io\n"
        "from batchgpt.cli import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli(['run', '--help'])\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    heavy = {
        "asyncio",
        "aiohttp",
        "curl_cffi",
        "email.utils",
        "importlib.metadata",
        "batchgpt.providers.chatgpt_es.session",
        "batchgpt.providers.chatgpt_es.page",
    }
    assert loaded & heavy == set()
    assert "batchgpt.providers.openai" in loaded  # both backends' options were declared


def test_version_is_the_installed_package_version() -> None:
    shown = run_cli("--version")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().endswith(f"version {version('batchgpt')}")


# every JobError ---------------------------------------------------------------------------------


@dataclass
class Failure:
    """A command line that ends in one kind of `JobError`, and a piece of its message."""

    args: list[str]
    says: str
    env: dict[str, str] | None = None
    limit_file_size: int | None = None


def usage(tmp: Path, url: str, closed_port: int) -> Failure:
    return Failure([*CLI, "run", str(tmp / "missing.jsonl")], "cannot read input")


def input_changed(tmp: Path, url: str, closed_port: int) -> Failure:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 2)
    (tmp / "prompts.results.jsonl.ckpt").write_text('{"version": 99}')
    return Failure(run_args(prompts, url), "version 99")


def corrupt_output(tmp: Path, url: str, closed_port: int) -> Failure:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 3)
    good = '{"id": "q1", "line": 1, "status": "ok", "response": "yes"}'
    write_jsonl(tmp / "prompts.results.jsonl", ["garbage", good])
    return Failure(run_args(prompts, url), "is corrupt at line 1")


def merge_conflict(tmp: Path, url: str, closed_port: int) -> Failure:
    shard = write_jsonl(tmp / "shard.jsonl", [{"id": "q1", "line": 1, "status": "ok"}])
    return Failure([*CLI, "merge", str(tmp / "all.jsonl"), str(shard), str(shard)], "merge refused")


def site_unreachable(tmp: Path, url: str, closed_port: int) -> Failure:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 4)
    closed = f"http://127.0.0.1:{closed_port}"
    return Failure(run_args(prompts, closed, "--give-up-after", "0.5"), "unreachable for")


def site_halted(tmp: Path, url: str, closed_port: int) -> Failure:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 4)
    return Failure(run_args(prompts, url, "--concurrency", "1"), "stopped: the service")


def output_write(tmp: Path, url: str, closed_port: int) -> Failure:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 30)
    return Failure(run_args(prompts, url), "file too large", limit_file_size=2000)


def job_locked(tmp: Path, url: str, closed_port: int) -> Failure:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 2)
    return Failure(run_args(prompts, url), "another run holds")


SCENARIOS: dict[type[JobError], Callable[[Path, str, int], Failure]] = {
    UsageError: usage,
    InputChangedError: input_changed,
    CorruptOutputError: corrupt_output,
    MergeConflictError: merge_conflict,
    SiteUnreachableError: site_unreachable,
    SiteHaltedError: site_halted,
    OutputWriteError: output_write,
    JobLockedError: job_locked,
}


def every_subclass(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *every_subclass(direct)}}


def test_every_job_error_has_a_case_below() -> None:
    assert set(SCENARIOS) == every_subclass(JobError)


@pytest.mark.parametrize("error", SCENARIOS, ids=lambda cls: cls.__name__)
def test_every_job_error_is_its_message_and_exit_code_without_a_traceback(
    error: type[JobError], emulator, tmp: Path, closed_port: int
) -> None:
    if error is SiteHaltedError:
        emulator.configure(chat="legacy", nonce_markup="none")  # no chat, three times in a row
    failure = SCENARIOS[error](tmp, emulator.url, closed_port)
    limit = failure.limit_file_size

    def limit_file_size() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def run() -> tuple[int, str]:
        done = batchgpt(failure.args, env=failure.env or cli_env(), preexec_fn=limit_file_size)
        return done.returncode, done.stderr

    if error is JobLockedError:
        with JobLock(tmp / "prompts.results.jsonl.lock"):
            code, stderr = run()
    else:
        code, stderr = run()

    assert code == error.exit_code, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("batchgpt: error: "), stderr
    assert failure.says in last, stderr


# --dry-run --------------------------------------------------------------------------------------

#: Options that are no setting of their own in the resolved config: folded into another one, or
#: an action of the command.
FOLDED = {"proxy_file": "proxies", "shard_count": "shard", "no_progress": "progress"}
ACTIONS = {"yes", "dry_run"}


@pytest.mark.parametrize("provider", list(BACKENDS))
def test_dry_run_shows_every_option_and_hides_credentials(
    emulator, tmp: Path, provider: str
) -> None:
    """Every option of the run (the core ones and the provider's own) is shown."""
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 3)
    (tmp / "proxies.txt").write_text("http://filed:pass@127.0.0.1:2\n")
    declared_options = OPTIONS + backend_class(provider).options
    secrets = {o: f"s3cr3t-{o.name}" for o in declared_options if o.secret}
    env = cli_env(**{o.envvars[0]: value for o, value in secrets.items()})
    base_url = emulator.url.replace("http://", "http://me:pw@")
    args = run_args(prompts, base_url, "--proxy", "http://u:hidden@127.0.0.1:1")
    args += ["--proxy-file", str(tmp / "proxies.txt"), "--provider", provider, "--dry-run"]

    shown = batchgpt(args, env=env)

    assert shown.returncode == 0, shown.stderr
    resolved = json.loads(shown.stdout)
    settings = {f.name for f in fields(RunConfig)} - {"backend_options"}
    backend = {o.name for o in backend_class(provider).options}
    assert set(resolved) >= settings
    for declared in declared_options:
        if declared.name in ACTIONS:
            assert declared.name not in resolved
        else:
            assert FOLDED.get(declared.name, declared.name) in resolved, declared.name
    assert set(resolved) - settings <= backend
    assert resolved["base_url"] == emulator.url.replace("http://", "http://***@")
    assert resolved["proxies"] == ["http://***@127.0.0.1:1", "http://***@127.0.0.1:2"]
    for declared, value in secrets.items():
        assert resolved[declared.name] == "set"
        assert value not in shown.stdout + shown.stderr
    for hidden in ("pw", "hidden", "pass"):
        assert hidden not in shown.stdout, hidden
    assert (emulator.stats.gets, emulator.stats.posts) == (0, 0)
    assert sorted(p.name for p in tmp.iterdir()) == ["prompts.jsonl", "proxies.txt"]


def test_the_readme_options_table_is_the_declared_options() -> None:
    """README's table comes from config.py; regenerate it with `config.markdown_table()`."""
    from batchgpt.config import markdown_table

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- options table -->\n", 1)[1].split("\n<!-- end of options table")[0]
    assert table == markdown_table()
