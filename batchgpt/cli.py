"""The `batchgpt` command line: Click commands that parse options and call the library.

`run`'s options are built from their declarations in config.py, so their flags, environment
variables, job-file keys, checks, defaults and help text come from one place.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from batchgpt.config import Flag, Option, Texts, Url, option, run_options
from batchgpt.errors import JobError, UsageError, file_error
from batchgpt.logs import LOG_FORMAT_ENVVAR, LOG_FORMATS, announce, is_json, setup_logging

F = TypeVar("F", bound=Callable[..., Any])

EXIT_DATAERR = 65
log = logging.getLogger("batchgpt")


def main() -> None:
    """The console entry point: every `JobError` becomes its one-line message and exit code, an
    OSError too (74, or 2 for a path to fix), and so does Click's own usage error; all in the
    log format asked for. A signal outside the run's own handlers exits 130/143 at once."""
    _stop_on_signals()
    setup_logging(_log_format(sys.argv[1:]))
    try:
        cli.main(standalone_mode=False)
    except _Stopped as stop:
        log.error("error: stopped by %s; run again to resume", signal.Signals(stop.signal).name)
        sys.exit(stop.code)
    except JobError as error:
        _fail(error)
    except OSError as error:  # one not named where it happened
        _fail(file_error("use", error.filename or "a file", error))
    except click.exceptions.Abort:
        log.error("Aborted!", extra={"fields": {"exit_code": 1}})
        sys.exit(1)
    except click.ClickException as error:
        if is_json():
            usage = (
                error.ctx.get_usage() if isinstance(error, click.UsageError) and error.ctx else None
            )
            fields = {"kind": "usage", "exit_code": error.exit_code, "usage": usage}
            log.error("error: %s", error.format_message(), extra={"fields": fields})
        else:
            error.show()
        sys.exit(error.exit_code)


def _fail(error: JobError) -> None:
    fields = {"kind": error.kind, "exit_code": error.exit_code}
    log.error("error: %s", error, extra={"fields": fields})
    sys.exit(error.exit_code)


def _log_format(args: list[str]) -> str:
    """--log-format (or its variable), read before Click parses anything, so that Click's own
    errors come out in that format too."""
    chosen = os.environ.get(LOG_FORMAT_ENVVAR, "text")
    for index, arg in enumerate(args):
        if arg == "--log-format" and index + 1 < len(args):
            chosen = args[index + 1]
        elif arg.startswith("--log-format="):
            chosen = arg.partition("=")[2]
    return "json" if chosen == "json" else "text"


class _Stopped(SystemExit):
    """SIGINT or SIGTERM outside the run's own handlers (before the run, or after it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal = signum


def _stop_at_once(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _stop_on_signals() -> None:
    """Exit 130/143 on a signal that comes before the run installs its handlers (nothing has
    been touched then) or after it removed them, instead of a traceback or death by signal."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_at_once)


class _OptionType(click.ParamType):
    """Reads a value with the option's own kind, so Click reports its check (naming the
    option and, for a variable, the variable)."""

    def __init__(self, declared: Option) -> None:
        self.declared = declared
        self.name = declared.kind.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self.declared.kind.parse(value)
        except (ValueError, UsageError) as exc:
            self.fail(exc.message if isinstance(exc, UsageError) else str(exc), param, ctx)


def _help(declared: Option) -> str:
    default = declared.shown_default
    return declared.help + (f" [default: {default}]" if default else "")


def click_option(declared: Option) -> Callable[[F], F]:
    """`declared` as a Click option (flag, environment variables, help, check)."""
    names = [declared.flag, *([declared.short] if declared.short else []), declared.name]
    kwargs: dict[str, Any] = {
        "help": _help(declared),
        "envvar": list(declared.envvars),
        "show_envvar": True,
    }
    if isinstance(declared.kind, Flag):
        kwargs.update(is_flag=True, default=None)
    elif isinstance(declared.kind, Texts):
        kwargs.update(multiple=True, metavar="URL")
    else:
        kwargs.update(type=_OptionType(declared), metavar=declared.kind.metavar)
    return click.option(*names, **kwargs)


class JobCommand(click.Command):
    """A command whose INPUT may be a TOML job file: the file's values become the defaults of
    the options (Click's `default_map`), below the command line and the environment."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from batchgpt.jobs import is_job_file, load_job

        parsed, _, _ = self.make_parser(ctx).parse_args(args=list(args))
        first = next(p.name for p in self.params if isinstance(p, click.Argument))
        given = parsed.get(first)
        if isinstance(given, str) and is_job_file(Path(given)):
            job = load_job(Path(given))
            ctx.meta["batchgpt.job"] = job
            ctx.default_map = {**(ctx.default_map or {}), **job}
        return super().parse_args(ctx, args)


def _input(ctx: click.Context, input_path: Path) -> str:
    """The prompt file: INPUT itself, or the job file's `input`."""
    job = ctx.meta.get("batchgpt.job")
    return str(job["input"]) if job else str(input_path)


def _logging_options(function: F) -> F:
    function = click.option("-v", "--verbose", count=True, help="More detail (debug).")(function)
    function = click.option(
        "-q", "--quiet", count=True, help="Less: -q hides progress, -qq all but errors."
    )(function)
    return click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS),
        default="text",
        envvar=LOG_FORMAT_ENVVAR,
        show_envvar=True,
        help="json: every line on stderr is one object (time, level, event, fields).",
    )(function)


def _setup_logging(options: dict[str, Any]) -> None:
    """Logging as the options ask; in JSON no progress bar, which is not a line of JSON."""
    log_format = options.pop("log_format")
    setup_logging(log_format, options.pop("verbose") - options.pop("quiet"))
    if log_format == "json":
        options["no_progress"] = True


def _stdin_is_a_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed
        return False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="batchgpt")
def cli() -> None:
    """Answer every prompt in a JSONL file through chatgpt.es, crash-safe and resumable."""


def _run_options(function: F) -> F:
    for declared in reversed(run_options()):
        if declared.on_command_line:
            function = click_option(declared)(function)
    return function


def _environment_only() -> dict[str, str]:
    """The options read only from the environment (a secret: a flag would show in `ps`), each
    from the first of its variables that is set."""
    values = {}
    for declared in run_options():
        if not declared.on_command_line:
            given = next((os.environ[v] for v in declared.envvars if os.environ.get(v)), None)
            if given is not None:
                values[declared.name] = given
    return values


def _environment_only_help() -> str:
    lines = [
        f"{' or '.join(declared.envvars)}: {declared.help}"
        for declared in run_options()
        if not declared.on_command_line and declared.name != "input"
    ]
    return "\b\nFrom the environment only:\n" + "\n".join(lines) if lines else ""


@cli.command(cls=JobCommand, epilog=_environment_only_help())
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@_run_options
@_logging_options
@click.pass_context
def run(ctx: click.Context, input_path: Path, **options: Any) -> None:
    """Send every prompt in INPUT (a .jsonl file, or a .toml job file) and write one result each.

    Running the same command again resumes where the last run stopped.
    """
    from batchgpt.config import RunConfig

    _setup_logging(options)
    config = RunConfig.build({**_environment_only(), **options, "input": _input(ctx, input_path)})
    if options["dry_run"]:
        import json

        click.echo(json.dumps(config.public(), indent=2))
        return
    if config.restart and not options["yes"]:
        if not _stdin_is_a_terminal():
            raise UsageError(
                "--restart deletes the output; add --yes to confirm without a terminal"
            )
        click.confirm(f"Delete {config.output} and its checkpoint and start over?", abort=True)
    from batchgpt.progress import summary_lines
    from batchgpt.runner import run_foreground

    outcome = run_foreground(config)
    _stop_on_signals()  # the run's handlers are gone
    for line, fields in summary_lines(outcome.stats, str(config.output)):
        announce(line, **fields)
    if config.report is not None:
        rerun = " ".join(["batchgpt", *map(shlex.quote, sys.argv[1:]), "--retry-errors"])
        _write_report([config.output], config.report, rate=config.rate or None, rerun=rerun)
    sys.exit(outcome.exit_code)


@cli.command(cls=JobCommand)
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click_option(option("provider"))
@click_option(option("model"))
@click_option(option("max_line_bytes"))
@click.option("--json", "as_json", is_flag=True, help="A machine-readable report on stdout.")
@click.pass_context
def validate(
    ctx: click.Context,
    input_path: Path,
    provider: str | None,
    model: str | None,
    max_line_bytes: int | None,
    as_json: bool,
) -> None:
    """Check every line of INPUT without sending anything (exit 65 if any is bad)."""
    from batchgpt.config import RunConfig
    from batchgpt.records import InvalidLine
    from batchgpt.validate import validate_file

    config = RunConfig.build(
        {
            "input": _input(ctx, input_path),
            "provider": provider,
            "model": model,
            "max_line_bytes": max_line_bytes,
        }
    )

    def show(problem: InvalidLine) -> None:
        click.echo(f"{config.input}:{problem.line}: {problem.reason}")

    report = validate_file(config, on_problem=None if as_json else show)
    if as_json:
        click.echo(report.to_json())
    else:
        click.echo(report.summary(), err=True)
    sys.exit(EXIT_DATAERR if report.invalid else 0)


@cli.command()
@click.argument("url", required=False)
@click.option("--ask", metavar="TEXT", help="Also send one prompt, as a run would.")
@click_option(option("chat"))
@click_option(option("bot_id"))
@click.option("--proxy", metavar="URL", help="Reach the site through this proxy.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per request.")
@click.option("--json", "as_json", is_flag=True, help="A machine-readable report on stdout.")
def probe(
    url: str | None,
    ask: str | None,
    chat: str | None,
    bot_id: int | None,
    proxy: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """What the chat site at URL runs [default: https://chatgpt.es]: its chat generation, bots
    and nonce, each request's status and time; exit 0 when it would answer, else the exit code a
    run would get."""
    from batchgpt.probe import run_probe
    from batchgpt.providers.chatgpt_es import ChatGptEs

    if url is not None:
        try:
            url = Url().parse(url)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="URL") from None
    report = run_probe(
        url or ChatGptEs.url,
        ask=ask,
        chat=chat or "auto",
        bot_id=bot_id,
        proxy=proxy,
        timeout=timeout,
    )
    click.echo(report.to_json() if as_json else report.text())
    sys.exit(report.exit_code)


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="A machine-readable report on stdout.")
def status(path: Path, as_json: bool) -> None:
    """Done, errors and remaining for a job, from its INPUT, OUTPUT or job file."""
    from batchgpt.status import job_status

    report = job_status(path)
    click.echo(report.to_json() if as_json else report.text())


@cli.command()
@click.argument("output", type=click.Path(path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--input", "input_path", type=click.Path(path_type=Path), help="Check no line of it is missing."
)
def merge(output: Path, shards: tuple[Path, ...], input_path: Path | None) -> None:
    """Join shard outputs (or their job files) into OUTPUT, each input line exactly once."""
    from batchgpt.merge import merge_outputs

    merged = merge_outputs(output, list(shards), input_path=input_path)
    click.echo(
        f"batchgpt: merged {merged} results from {len(shards)} files into {output}", err=True
    )


@cli.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--to", "output_format", type=click.Choice(["native", "openai"]), required=True)
def convert(source: Path, target: Path, output_format: str) -> None:
    """Rewrite a results file in the other output shape."""
    from batchgpt.formats import convert_file

    count = convert_file(source, target, output_format)
    click.echo(f"batchgpt: wrote {count} {output_format} results to {target}", err=True)


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("report.html"),
    show_default=True,
)
@click.option("--rate", help="The run's configured rate, drawn on the throughput chart.")
def report(results: tuple[Path, ...], output: Path, rate: str | None) -> None:
    """Write one self-contained HTML report of results files (or of their job files)."""
    from batchgpt.config import parse_rate
    from batchgpt.jobs import results_files

    outputs = [results_files(path).output for path in results]
    _write_report(outputs, output, rate=parse_rate(rate) if rate else None)


def _write_report(
    results: list[Path], output: Path, *, rate: float | None, rerun: str | None = None
) -> None:
    from batchgpt.report import ReportDependencyError, write_report

    try:
        write_report(results, output, rate=rate, rerun_command=rerun)
    except ReportDependencyError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"report: {error.filename}: {error.strerror or error}") from None
    announce(f"report written to {output}", report=str(output))


@cli.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Loopback address to serve on."
)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--api",
    type=click.Choice(["chatgpt-es", "openai"]),
    default="chatgpt-es",
    show_default=True,
    help="Which service to emulate: the chatgpt.es site, or an OpenAI-compatible API "
    "(POST /v1/chat/completions; settings such as api_key=..., models=a,b, rate_limited_first=N).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Emulator setting, e.g. latency=0.2.",
)
def emulator(host: str, port: int, api: str, settings: tuple[str, ...]) -> None:
    """Serve a local emulator of a chat service (for trying things out and for tests)."""
    from batchgpt.emulator import serve_forever
    from batchgpt.emulator.openai import serve_openai_forever

    try:
        changes = dict(setting.split("=", 1) for setting in settings)
    except ValueError:
        raise UsageError("--set takes KEY=VALUE") from None
    try:
        (serve_openai_forever if api == "openai" else serve_forever)(host, port, changes)
    except (KeyError, ValueError) as error:
        raise UsageError(f"--set: {error}") from None
    except OSError as error:
        raise UsageError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None


@cli.command()
@click.option(
    "--keep",
    type=click.Path(path_type=Path),
    help="Write the results here instead of a temp folder.",
)
def demo(keep: Path | None) -> None:
    """Run the demo's prompts through the full pipeline against the bundled emulator on loopback."""
    from batchgpt.demo import run_demo

    sys.exit(run_demo(keep))
