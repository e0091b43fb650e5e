"""Every run option, once, and `RunConfig`, the resolved options of one run.

An `Option` holds an option's name, kind (how its value is read and checked), default and help.
The command line, `BATCHGPT_<OPTION>` variables, TOML job files, `--dry-run` and `--help` all read
these declarations, so a default or a check cannot differ between them. Precedence is Click's:
command line > environment > job file > default. A backend declares its own options the same way
(`Backend.options`); `run_options()` is the whole list.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from batchgpt.errors import ModelNotSupportedError, UsageError
from batchgpt.formats import FORMATS
from batchgpt.inputs import DEFAULT_MAX_LINE_BYTES, Shard
from batchgpt.providers import BACKENDS
from batchgpt.providers.http import DEFAULT_MAX_ANSWER_BYTES
from batchgpt.redact import redact

if TYPE_CHECKING:
    from batchgpt.providers.base import Backend

SHARD_INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")
ENV_PREFIX = "BATCHGPT_"
_PERIODS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([a-z]+))?\s*")


# kinds: how a value is read ---------------------------------------------------------------------


class Kind:
    """How an option's value is read from text (command line, environment), from a TOML value,
    or as already read (a library caller); `parse` raises ValueError with the reason."""

    toml_types: ClassVar[tuple[type, ...]] = (str,)
    metavar: str = "TEXT"

    def parse(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"must be text, not {type(value).__name__}")
        return value


class Text(Kind):
    pass


class Url(Kind):
    """An http(s) URL with a host, a valid port if any, and no control characters: caught here,
    named by its option, not as a connection failure on every prompt. (Spaces and non-ASCII are
    percent-encoded when sent.) Quoted with any password hidden."""

    metavar: str = "URL"

    def parse(self, value: Any) -> str:
        text = super().parse(value)
        shown = redact(text)
        parts = urlsplit(text)
        try:
            parts.port  # noqa: B018 - reading it checks it
        except ValueError:
            raise ValueError(f"must be a URL with a port from 0 to 65535, not {shown!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, not {shown!r}")
        if any(not char.isprintable() and char != " " for char in text):
            raise ValueError(f"must be a URL without control characters, not {shown!r}")
        return text


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...]

    @property
    def metavar(self) -> str:  # type: ignore[override]
        return "[" + "|".join(self.choices) + "]"

    def parse(self, value: Any) -> str:
        if value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}, not {value!r}")
        return str(value)


@dataclass(frozen=True)
class Integer(Kind):
    minimum: int = 1
    toml_types: ClassVar[tuple[type, ...]] = (int,)
    metavar: str = "N"

    def parse(self, value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"must be a whole number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {value!r}")
        if value < self.minimum:
            raise ValueError(f"must be at least {self.minimum}, not {value}")
        return value


@dataclass(frozen=True)
class Number(Kind):
    """A finite number; `positive` refuses 0 (where 0 would mean nothing), else 0 is allowed."""

    positive: bool = True
    toml_types: ClassVar[tuple[type, ...]] = (int, float)
    metavar: str = "S"

    def parse(self, value: Any) -> float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"must be a number, not {value!r}") from None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"must be a number, not {value!r}")
        if value < 0 or (self.positive and value == 0):
            raise ValueError(f"must be {'above' if self.positive else 'at least'} 0, not {value:g}")
        return float(value)


class Rate(Kind):
    """Requests per second from `2`, `2/s`, `120/min`, `5000/h`; 0 means unlimited."""

    toml_types = (str, int, float)
    metavar = "R"

    def parse(self, value: Any) -> float:
        return parse_rate(value)


class File(Kind):
    """A path; in a job file, relative to the job file's folder."""

    metavar = "PATH"

    def parse(self, value: Any) -> Path:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a path, not {value!r}")
        return Path(value)


class ShardKind(Kind):
    metavar = "K/N"

    def parse(self, value: Any) -> Shard:
        return value if isinstance(value, Shard) else Shard.parse(str(value))


class Flag(Kind):
    toml_types = (bool,)

    def parse(self, value: Any) -> bool:
        if isinstance(value, str):
            value = value.strip().lower()
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off", ""):
                return False
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
        return value


class Texts(Kind):
    """A list of text values (a repeatable option, a TOML array of strings)."""

    toml_types = (list, tuple)

    def parse(self, value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        return list(value)


def parse_rate(text: str | float | int) -> float:
    """Requests per second from `2`, `2/s`, `120/min`, `5000/h`; 0 means unlimited."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value, period = float(text), "s"
    else:
        match = _RATE.fullmatch(str(text).lower())
        if not match or (match[2] or "s") not in _PERIODS:
            raise UsageError(
                f"--rate {text!r}: use a number per s, min or h, like 2, 120/min, 5000/h"
            )
        value, period = float(match[1]), match[2] or "s"
    if value < 0 or not math.isfinite(value):
        raise UsageError(f"--rate {text!r} must not be negative")
    return value / _PERIODS[period]


# options ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of `batchgpt run`: its flag is `--` + name with dashes (or `flag_name`), its
    environment variable BATCHGPT_ + the flag in capitals, its job-file key the name itself."""

    name: str
    kind: Kind
    help: str
    default: Any = None
    #: What --help shows as the default when it is derived from other options.
    default_text: str | None = None
    short: str | None = None
    flag_name: str | None = None
    #: Part of the checkpoint: a resume must use the same value.
    shapes_results: bool = False
    #: Never printed: --dry-run shows it as set or not.
    secret: bool = False
    #: Also read from these environment variables, after BATCHGPT_<NAME>.
    extra_envvars: tuple[str, ...] = ()
    #: Allowed as a job-file key (a job file must not ask to delete its own output).
    in_job: bool = True
    #: Read on the command line (False: environment and job file only, e.g. a secret).
    on_command_line: bool = True

    @property
    def flag(self) -> str:
        return "--" + (self.flag_name or self.name.replace("_", "-"))

    @property
    def envvars(self) -> tuple[str, ...]:
        return (ENV_PREFIX + self.flag[2:].upper().replace("-", "_"), *self.extra_envvars)

    @property
    def shown_default(self) -> str | None:
        """The default as --help and the README show it (None: no default worth showing)."""
        value = self.default
        if self.default_text is None and value is not None and value is not False and value != ():
            return str(value)
        return self.default_text

    def read(self, value: Any) -> Any:
        """The value checked and converted; UsageError naming the option otherwise."""
        try:
            return self.kind.parse(value)
        except (ValueError, UsageError) as exc:
            reason = exc.message if isinstance(exc, UsageError) else str(exc)
            shown = "***" if self.secret else repr(value)
            raise UsageError(f"{self.flag} {shown}: {reason}") from None


OPTIONS: tuple[Option, ...] = (
    Option(
        "input", File(), "The prompt file (.jsonl), or a job file (.toml).", on_command_line=False
    ),
    Option("output", File(), "Results file.", short="-o", default_text="INPUT.results.jsonl"),
    Option("checkpoint", File(), "Checkpoint file.", default_text="OUTPUT.ckpt"),
    Option(
        "provider",
        Choice(tuple(BACKENDS)),
        "The chat service to send the prompts to.",
        default="chatgpt-es",
    ),
    Option(
        "base_url",
        Url(),
        "The service: the chat page (chatgpt-es), the API root (openai).",
        default_text="the provider's own",
    ),
    Option(
        "model",
        Text(),
        "Default model; a line's own model wins.",
        default_text="the provider's own",
        shapes_results=True,
    ),
    Option("concurrency", Integer(1), "Requests in flight.", default=4),
    Option(
        "rate",
        Rate(),
        "Prompts sent per second for the run: 2, 2/s, 120/min, 5000/h; 0 = unlimited.",
        default=0.0,
    ),
    Option(
        "sessions",
        Integer(1),
        "HTTP sessions (cookie jar + nonce each).",
        default_text="min(concurrency, 4)",
    ),
    Option("proxies", Texts(), "Proxy URL; repeat for several.", flag_name="proxy", default=()),
    Option("proxy_file", File(), "File of proxy URLs, one per line."),
    Option("retries", Integer(0), "Attempts after the first for retryable errors.", default=5),
    Option(
        "give_up_after",
        Number(),
        "Stop (exit 69) once the site is unreachable this many seconds.",
        default=300.0,
    ),
    Option("timeout", Number(), "Seconds per request.", default=120.0),
    Option("shard", ShardKind(), "Process only shard K/N of the ids.", shapes_results=True),
    Option(
        "shard_count",
        Integer(1),
        "N shards; K from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID.",
    ),
    Option("retry_errors", Flag(), "On resume, run retryable error records again.", default=False),
    Option(
        "restart",
        Flag(),
        "Discard output and checkpoint and start over.",
        default=False,
        in_job=False,
    ),
    Option("yes", Flag(), "Do not ask before --restart.", default=False, in_job=False),
    Option(
        "repair",
        Flag(),
        "Drop corrupt lines in the output instead of stopping.",
        default=False,
        in_job=False,
    ),
    Option(
        "format",
        Choice(tuple(FORMATS)),
        "Output shape.",
        default="native",
        shapes_results=True,
    ),
    Option(
        "no_progress",
        Flag(),
        "No progress bar (automatic when stderr is not a TTY).",
        default=False,
    ),
    Option(
        "drain_timeout",
        Number(positive=False),
        "Seconds in-flight requests get after SIGINT/SIGTERM; 0 = stop at once.",
        default=20.0,
    ),
    Option(
        "max_line_bytes",
        Integer(1),
        "Longest accepted input line.",
        default=DEFAULT_MAX_LINE_BYTES,
        default_text="8 MiB",
        shapes_results=True,
    ),
    Option(
        "max_answer_bytes",
        Integer(1),
        "Largest response read; a bigger answer is a retryable bad_response.",
        default=DEFAULT_MAX_ANSWER_BYTES,
        default_text="8 MiB",
    ),
    Option("sync_lines", Integer(1), "fsync output and checkpoint every N lines.", default=512),
    Option("sync_seconds", Number(), "... or every S seconds, whichever comes first.", default=1.0),
    Option("report", File(), "Also write an HTML report here at the end."),
    Option(
        "dry_run",
        Flag(),
        "Print the resolved options as JSON and exit.",
        default=False,
        in_job=False,
    ),
)


def run_options() -> tuple[Option, ...]:
    """Every option of `batchgpt run`: the core ones, then each backend's own."""
    from batchgpt.providers import backend_classes

    return OPTIONS + tuple(option for backend in backend_classes() for option in backend.options)


def markdown_table() -> str:
    """Every `batchgpt run` option as the README's table shows it (a test keeps them equal)."""
    rows = ["| option | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for declared in run_options():
        if declared.name == "input":
            continue
        flag = f"`{declared.short}`, `{declared.flag}`" if declared.short else f"`{declared.flag}`"
        if not declared.on_command_line:
            flag = "(environment only)"
        envvars = ", ".join(f"`{name}`" for name in declared.envvars)
        default = declared.shown_default or ""
        rows.append(f"| {flag} | {envvars} | {default} | {declared.help} |")
    return "\n".join(rows)


def option(name: str) -> Option:
    """The option called `name`."""
    return next(o for o in run_options() if o.name == name)


def default_output(input_path: Path, shard: Shard | None) -> Path:
    """prompts.jsonl → prompts.results.jsonl (prompts.shard-1-of-3.results.jsonl for a shard)."""
    stem = input_path.name.removesuffix(".jsonl")
    if shard is not None:
        stem += f".shard-{shard.index}-of-{shard.count}"
    return input_path.with_name(stem + ".results.jsonl")


def real_path(path: Path) -> Path:
    """`path` with every symlink and `..` resolved, absolute: the one name of a job's file, so
    that a symlink, a relative path or a symlinked folder reaches the same lock and checkpoint."""
    return Path(os.path.realpath(path))


def lock_path(output: Path) -> Path:
    """The lock file of the job whose results are `output` (beside the real file)."""
    output = real_path(output)
    return output.with_name(output.name + ".lock")


def read_proxy_file(path: Path) -> list[str]:
    """One proxy URL per line; blank lines and # comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --proxy-file {path}: {exc.strerror}") from exc
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _shard(shard: Shard | None, count: int | None) -> Shard | None:
    if shard is not None and count is not None:
        raise UsageError("use either --shard K/N or --shard-count N, not both")
    if count is None:
        return shard
    for variable in SHARD_INDEX_VARIABLES:
        if text := os.environ.get(variable, "").strip():
            if not text.isdigit() or int(text) >= count:
                raise UsageError(
                    f"--shard-count {count}: {variable}={text!r} is not in 0..{count - 1}"
                )
            return Shard(int(text), count)
    raise UsageError(
        f"--shard-count {count} needs the shard index in " + " or ".join(SHARD_INDEX_VARIABLES)
    )


# the resolved options ---------------------------------------------------------------------------


@dataclass
class RunConfig:
    """Every option of one run, checked and with every default filled in; `build` makes one."""

    input: Path
    output: Path
    checkpoint: Path
    provider: str
    base_url: str
    model: str
    concurrency: int
    rate: float
    sessions: int
    proxies: list[str]
    retries: int
    give_up_after: float
    timeout: float
    shard: Shard | None
    retry_errors: bool
    restart: bool
    repair: bool
    format: str
    progress: bool
    drain_timeout: float
    max_line_bytes: int
    max_answer_bytes: int
    sync_lines: int
    sync_seconds: float
    report: Path | None
    #: The backend's own options, by name (`Backend.options`).
    backend_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, values: Mapping[str, Any]) -> RunConfig:
        """A config from option values by name (text, TOML values or already read; None or
        missing: the default). Every value is checked; UsageError names the first bad one."""
        from batchgpt.providers import backend_class

        options = {o.name: o for o in run_options()}
        unknown = set(values) - set(options)
        if unknown:
            raise UsageError(f"unknown option {sorted(unknown)[0]!r}")
        read = {
            name: o.default if values.get(name) is None else o.read(values[name])
            for name, o in options.items()
        }
        if read["input"] is None:
            raise UsageError("no input: give a .jsonl prompt file or a .toml job file")
        backend = backend_class(read["provider"])
        _refuse_options_of_other_backends(backend, values)
        model = read["model"] or backend.default_model
        try:
            backend.check_model(model)
        except ModelNotSupportedError as exc:
            raise UsageError(f"--model {model!r}: {exc.message}") from None
        shard = _shard(read["shard"], read["shard_count"])
        output = real_path(read["output"] or default_output(read["input"], shard))
        proxies = list(read["proxies"])
        if read["proxy_file"] is not None:
            proxies += read_proxy_file(read["proxy_file"])
        return cls(
            input=read["input"],
            output=output,
            checkpoint=real_path(read["checkpoint"] or Path(f"{output}.ckpt")),
            provider=read["provider"],
            base_url=read["base_url"] or backend.default_base_url,
            model=model,
            concurrency=read["concurrency"],
            rate=read["rate"],
            sessions=read["sessions"] or min(read["concurrency"], 4),
            proxies=proxies,
            retries=read["retries"],
            give_up_after=read["give_up_after"],
            timeout=read["timeout"],
            shard=shard,
            retry_errors=read["retry_errors"],
            restart=read["restart"],
            repair=read["repair"],
            format=read["format"],
            progress=not read["no_progress"] and sys.stderr.isatty(),
            drain_timeout=read["drain_timeout"],
            max_line_bytes=read["max_line_bytes"],
            max_answer_bytes=read["max_answer_bytes"],
            sync_lines=read["sync_lines"],
            sync_seconds=read["sync_seconds"],
            report=read["report"],
            backend_options={o.name: read[o.name] for o in backend.options},
        )

    @property
    def lock_path(self) -> Path:
        return lock_path(self.output)

    def result_options(self) -> dict[str, Any]:
        """The options that shape results: a resume must use the same ones."""
        return {o.name: _plain(getattr(self, o.name)) for o in OPTIONS if o.shapes_results}

    def public(self) -> dict[str, Any]:
        """The resolved options for people and logs (--dry-run): credentials redacted, secrets
        shown only as set or not."""
        shown: dict[str, Any] = {}
        for name, value in vars(self).items():
            if name == "backend_options":
                for o in run_options():
                    if o.name in value:
                        shown[o.name] = _public(o, value[o.name])
            else:
                shown[name] = _plain(value)
        shown["base_url"] = redact(self.base_url)
        shown["proxies"] = [redact(proxy) for proxy in self.proxies]
        return shown


def _refuse_options_of_other_backends(backend: type[Backend], values: Mapping[str, Any]) -> None:
    """An option another backend owns means nothing here: an error, not silence. (A secret is
    let be: OPENAI_API_KEY may well be set for other work.)"""
    from batchgpt.providers import BACKENDS, backend_class

    for name in BACKENDS:
        other = backend_class(name)
        if other is backend:
            continue
        for declared in other.options:
            if not declared.secret and values.get(declared.name) is not None:
                raise UsageError(
                    f"{declared.flag} is an option of --provider {other.name}, "
                    f"not of {backend.name}"
                )


def _plain(value: Any) -> Any:
    """A value as JSON shows it."""
    if isinstance(value, Path | Shard):
        return str(value)
    return value


def _public(o: Option, value: Any) -> Any:
    if o.secret:
        return "set" if value else None
    return _plain(value)
