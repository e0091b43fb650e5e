"""TOML job files: a run's options as a file, for cron, Kubernetes and Slurm.

A job file's keys are the long option names with underscores; each value is checked as its
option's own check would (config.py), and relative paths resolve against the job file's folder.
On the command line a job file stands in for INPUT: its values become the defaults of that run,
below the command line and the environment.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgpt.config import File, RunConfig, lock_path, real_path, run_options
from batchgpt.errors import UsageError


def is_job_file(path: Path) -> bool:
    return path.suffix == ".toml"


def load_job(path: Path) -> dict[str, Any]:
    """A job file's options by name, checked, with paths made absolute."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read job file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from exc
    options = {option.name: option for option in run_options() if option.in_job}
    for key, value in data.items():
        if key not in options:
            raise UsageError(f"{path}: unknown key {key!r} (known keys: {', '.join(options)})")
        kind = options[key].kind
        if (isinstance(value, bool) and bool not in kind.toml_types) or not isinstance(
            value, kind.toml_types
        ):
            wanted = " or ".join(t.__name__ for t in kind.toml_types)
            raise UsageError(f"{path}: key {key!r} must be {wanted}, not {type(value).__name__}")
        try:
            kind.parse(value)
        except (ValueError, UsageError) as exc:
            reason = exc.message if isinstance(exc, UsageError) else str(exc)
            raise UsageError(f"{path}: key {key!r}: {reason}") from None
        if isinstance(kind, File):
            data[key] = str((path.parent / str(value)).resolve())
    if "input" not in data:
        raise UsageError(f"{path}: missing key 'input' (the prompt file)")
    return data


def job_values(path: Path) -> dict[str, Any]:
    """The option values a command's INPUT stands for: a job file's, or just the input."""
    return load_job(path) if is_job_file(path) else {"input": str(path)}


@dataclass(frozen=True)
class JobFiles:
    """Where a job keeps its results, checkpoint and lock."""

    output: Path
    checkpoint: Path
    lock: Path


def output_files(output: Path) -> JobFiles:
    """The files of the job whose results are `output` (its checkpoint the default one)."""
    return JobFiles(output, Path(f"{output}.ckpt"), lock_path(output))


def job_files(path: Path) -> JobFiles:
    """The files of the job `path` names (its job file, its INPUT or its OUTPUT), found the way
    `run` finds them, a job file's own `output` and `checkpoint` included."""
    output = real_path(path)
    if not is_job_file(path) and (
        Path(f"{output}.ckpt").exists() or output.name.endswith(".results.jsonl")
    ):
        return output_files(output)
    config = RunConfig.build(job_values(path))
    return JobFiles(config.output, config.checkpoint, config.lock_path)


def results_files(path: Path) -> JobFiles:
    """The files of a job named by its job file or by its results file, whatever that file is
    called (`merge` and `report` take results, never an INPUT)."""
    return job_files(path) if is_job_file(path) else output_files(path)
