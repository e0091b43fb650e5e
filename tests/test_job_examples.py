"""jobs/: the nightly job file, its crontab line and systemd units parse and mean what they say.

Each command is run through the real `batchgpt` CLI with --dry-run, which resolves every option
(job file, environment, command line) and prints them without touching anything.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from batchgpt.config import parse_rate

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"
NIGHTLY = JOBS / "nightly.toml"
#: Where jobs/crontab and jobs/systemd/ expect the checkout; the tests map it to this one.
INSTALLED = "/opt/batchgpt"
BATCHGPT = Path(sys.prefix) / "bin" / "batchgpt"
REDIRECTIONS = re.compile(r"^\d?>>?(&\d)?|^<")


def dry_run(argv: list[str], **env: str) -> dict[str, Any]:
    """`batchgpt ARGV --dry-run` in a subprocess; the resolved options."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGPT_")}
    done = subprocess.run(
        [str(BATCHGPT), *argv, "--dry-run"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def local(argument: str) -> str:
    """A path of the installed layout, pointed at this checkout."""
    argument = argument.replace(f"{INSTALLED}/venv/bin/batchgpt", str(BATCHGPT))
    return argument.replace(f"{INSTALLED}/", f"{ROOT}/")


# -- nightly.toml ---------------------------------------------------------------------------------


def test_nightly_job_file_is_toml_with_known_keys_only() -> None:
    from batchgpt.config import run_options

    job = tomllib.loads(NIGHTLY.read_text(encoding="utf-8"))
    assert set(job) <= {option.name for option in run_options() if option.in_job}
    assert {"input", "output", "rate", "concurrency", "drain_timeout"} <= set(job)


def test_nightly_job_file_resolves_to_its_own_values() -> None:
    job = tomllib.loads(NIGHTLY.read_text(encoding="utf-8"))
    resolved = dry_run(["run", str(NIGHTLY)])
    for key, value in job.items():
        if key == "rate":
            assert resolved["rate"] == parse_rate(value)
        else:
            assert resolved[key] == value, key
    assert resolved["checkpoint"] == job["output"] + ".ckpt"
    assert resolved["shard"] is None


def test_environment_and_command_line_override_the_job_file(tmp_path: Path) -> None:
    resolved = dry_run(
        ["run", str(NIGHTLY), "--rate", "1/s", "--output", str(tmp_path / "out.jsonl")],
        BATCHGPT_BASE_URL="http://127.0.0.1:9",
        BATCHGPT_CONCURRENCY="2",
    )
    assert resolved["rate"] == 1.0
    assert resolved["output"] == str(tmp_path / "out.jsonl")
    assert resolved["base_url"] == "http://127.0.0.1:9"
    assert resolved["concurrency"] == 2


def test_a_copy_of_the_job_file_resolves_relative_paths_against_its_folder(tmp_path: Path) -> None:
    text = NIGHTLY.read_text(encoding="utf-8").replace("/var/lib/batchgpt/nightly/", "data/")
    (tmp_path / "nightly.toml").write_text(text, encoding="utf-8")
    resolved = dry_run(["run", str(tmp_path / "nightly.toml")])
    assert resolved["input"] == str(tmp_path / "data" / "prompts.jsonl")
    assert resolved["output"] == str(tmp_path / "data" / "prompts.results.jsonl")


# -- crontab --------------------------------------------------------------------------------------


def crontab() -> tuple[dict[str, str], list[tuple[list[str], str]]]:
    """jobs/crontab's variables, and each entry as (five time fields, command)."""
    variables: dict[str, str] = {}
    entries = []
    for line in (JOBS / "crontab").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            name, value = line.split("=", 1)
            variables[name] = value.strip().strip('"')
            continue
        fields = line.split(None, 5)
        entries.append((fields[:5], fields[5]))
    return variables, entries


def test_crontab_has_one_nightly_entry() -> None:
    variables, entries = crontab()
    assert variables["SHELL"] == "/bin/sh"
    assert variables["PATH"].split(":")[0] == f"{INSTALLED}/venv/bin"
    ((schedule, command),) = entries
    assert schedule == ["30", "2", "*", "*", "*"]
    assert "%" not in command, "cron turns % into a newline"
    assert "flock" not in command, "batchgpt locks the job itself"


def test_crontab_command_parses_with_the_real_cli() -> None:
    _, ((_, command),) = crontab()
    words = shlex.split(command)
    cut = next(i for i, word in enumerate(words) if REDIRECTIONS.match(word))
    argv, redirections = words[:cut], words[cut:]
    assert argv[0] == "batchgpt"
    assert redirections[0] == ">>/var/lib/batchgpt/nightly/batchgpt.log"
    assert redirections[-1] == "2>&1"
    resolved = dry_run([local(word) for word in argv[1:]])
    assert resolved["input"] == tomllib.loads(NIGHTLY.read_text())["input"]


# -- systemd --------------------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((JOBS / "systemd" / name).read_text(encoding="utf-8"))
    return parser


def seconds(value: str) -> float:
    """A systemd time span such as 60, 60s, 15min or 20h, in seconds."""
    units = {"": 1, "s": 1, "min": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)\s*(s|min|h|)", value)
    assert match, value
    return int(match[1]) * units[match[2]]


def test_service_runs_the_nightly_job_once_and_stops_gracefully() -> None:
    service = unit("batchgpt-nightly.service")
    assert service.sections() == ["Unit", "Service"]
    assert service["Unit"]["Description"]
    section = service["Service"]
    assert section["Type"] == "oneshot"
    assert section["KillSignal"] == "SIGTERM"
    assert "143" in section["SuccessExitStatus"].split()
    assert set(section["RestartPreventExitStatus"].split()) >= {"2", "75"}
    argv = shlex.split(section["ExecStart"])
    assert argv[:2] == [f"{INSTALLED}/venv/bin/batchgpt", "run"]
    resolved = dry_run([local(word) for word in argv[1:]])
    assert resolved["input"] == tomllib.loads(NIGHTLY.read_text())["input"]
    assert seconds(section["TimeoutStopSec"]) > resolved["drain_timeout"] + 10


def test_timer_starts_the_service_every_night() -> None:
    timer = unit("batchgpt-nightly.timer")
    assert timer.sections() == ["Unit", "Timer", "Install"]
    assert timer["Timer"]["Unit"] == "batchgpt-nightly.service"
    assert re.fullmatch(r"\*-\*-\* \d\d:\d\d:\d\d", timer["Timer"]["OnCalendar"])
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_service_names_files_of_this_checkout() -> None:
    text = (JOBS / "systemd" / "batchgpt-nightly.service").read_text(encoding="utf-8")
    paths = [
        path
        for path in re.findall(rf"{INSTALLED}/[\w./-]+", text)
        if not path.startswith(f"{INSTALLED}/venv")
    ]
    assert paths
    for path in paths:
        assert Path(local(path)).exists(), path
