"""TOML job files and where each option of a run comes from: command line > environment >
job file > default. Relative paths in a job file resolve against the job file's folder."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from batchgpt.config import DEFAULT_BASE_URL, RunConfig, default_output, parse_rate
from batchgpt.errors import UsageError
from batchgpt.inputs import DEFAULT_MAX_LINE_BYTES, Shard
from batchgpt.providers.chatgpt_es import ChatGptEs
from batchgpt.records import FORMATS

_NUMBER = (int, float)
#: Job file keys and the types they accept.
JOB_KEYS: dict[str, tuple[type, ...]] = {
    "input": (str,),
    "output": (str,),
    "checkpoint": (str,),
    "base_url": (str,),
    "model": (str,),
    "concurrency": (int,),
    "rate": (str, *_NUMBER),
    "sessions": (int,),
    "proxies": (list,),
    "proxy_file": (str,),
    "retries": (int,),
    "give_up_after": _NUMBER,
    "timeout": _NUMBER,
    "shard": (str,),
    "shard_count": (int,),
    "retry_errors": (bool,),
    "format": (str,),
    "drain_timeout": _NUMBER,
    "max_line_bytes": (int,),
    "sync_lines": (int,),
    "sync_seconds": _NUMBER,
    "report": (str,),
}
_PATH_KEYS = ("input", "output", "checkpoint", "proxy_file", "report")
SHARD_INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")


def load_job(path: Path) -> dict[str, Any]:
    """A job file's options, type-checked, with paths made absolute."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read job file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from exc
    for key, value in data.items():
        if key not in JOB_KEYS:
            known = ", ".join(sorted(JOB_KEYS))
            raise UsageError(f"{path}: unknown key {key!r} (known keys: {known})")
        types = JOB_KEYS[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise UsageError(f"{path}: key {key!r} must be {wanted}, not {type(value).__name__}")
    if "proxies" in data and not all(isinstance(p, str) for p in data["proxies"]):
        raise UsageError(f"{path}: key 'proxies' must be a list of strings")
    if "input" not in data:
        raise UsageError(f"{path}: missing key 'input' (the prompt file)")
    for key in _PATH_KEYS:
        if key in data:
            data[key] = str((path.parent / data[key]).resolve())
    return data


def read_proxy_file(path: Path) -> list[str]:
    """One proxy URL per line; blank lines and # comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --proxy-file {path}: {exc.strerror}") from exc
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _shard(values: dict[str, Any]) -> Shard | None:
    if values.get("shard") and values.get("shard_count"):
        raise UsageError("use either --shard K/N or --shard-count N, not both")
    if values.get("shard"):
        try:
            return Shard.parse(values["shard"])
        except ValueError as exc:
            raise UsageError(f"--shard: {exc}") from exc
    count = values.get("shard_count")
    if not count:
        return None
    for variable in SHARD_INDEX_VARIABLES:
        if os.environ.get(variable, "").strip():
            text = os.environ[variable].strip()
            if not text.isdigit() or int(text) >= count:
                raise UsageError(
                    f"--shard-count {count}: {variable}={text!r} is not in 0..{count - 1}"
                )
            return Shard(int(text), count)
    raise UsageError(
        f"--shard-count {count} needs the shard index in " + " or ".join(SHARD_INDEX_VARIABLES)
    )


def _positive(name: str, value: Any, minimum: float = 1) -> Any:
    if value < minimum:
        raise UsageError(f"--{name.replace('_', '-')} must be at least {minimum:g}, not {value}")
    return value


def build_config(values: dict[str, Any]) -> RunConfig:
    """A RunConfig from resolved option values (None meaning unset)."""
    if not values.get("input"):
        raise UsageError("no input: give a .jsonl prompt file or a .toml job file")
    input_path = Path(values["input"])
    shard = _shard(values)
    output = Path(values["output"]) if values.get("output") else default_output(input_path, shard)
    checkpoint = Path(values.get("checkpoint") or f"{output}.ckpt")
    output_format = values.get("format") or "native"
    if output_format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {output_format!r}")
    proxies = list(values.get("proxies") or [])
    if values.get("proxy_file"):
        proxies += read_proxy_file(Path(values["proxy_file"]))
    concurrency = _positive("concurrency", values.get("concurrency") or 4)
    model = values.get("model") or "gpt-4o"
    if model not in ChatGptEs.models:
        raise UsageError(
            f"--model {model!r} is not known (use one of {', '.join(ChatGptEs.models)})"
        )
    return RunConfig(
        input=input_path,
        output=output,
        checkpoint=checkpoint,
        base_url=values.get("base_url") or DEFAULT_BASE_URL,
        model=model,
        concurrency=concurrency,
        rate=parse_rate(values["rate"]) if values.get("rate") is not None else 0.0,
        sessions=_positive("sessions", values.get("sessions") or min(concurrency, 4)),
        proxies=proxies,
        retries=_positive(
            "retries", values["retries"] if values.get("retries") is not None else 5, 0
        ),
        give_up_after=_positive("give_up_after", values.get("give_up_after") or 300.0, 0.1),
        timeout=_positive("timeout", values.get("timeout") or 120.0, 0.1),
        shard=shard,
        retry_errors=bool(values.get("retry_errors")),
        restart=bool(values.get("restart")),
        repair=bool(values.get("repair")),
        output_format=output_format,
        progress=bool(values.get("progress", True)),
        drain_timeout=_positive("drain_timeout", values.get("drain_timeout") or 20.0, 0),
        max_line_bytes=_positive(
            "max_line_bytes", values.get("max_line_bytes") or DEFAULT_MAX_LINE_BYTES
        ),
        report=Path(values["report"]) if values.get("report") else None,
        sync_lines=_positive("sync_lines", values.get("sync_lines") or 512),
        sync_seconds=_positive("sync_seconds", values.get("sync_seconds") or 1.0, 0.001),
    )
