"""The `batchgpt` command line: Click commands that parse options and call the library."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from batchgpt.errors import JobError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2
EXIT_DATAERR = 65


def _fail(error: JobError) -> None:
    click.echo(f"batchgpt: error: {error}", err=True)
    sys.exit(error.exit_code)


def _option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """A Click option whose value can also come from BATCHGPT_<NAME>."""
    long_name = next(name for name in names if name.startswith("--"))
    kwargs.setdefault("envvar", "BATCHGPT_" + long_name[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*names, **kwargs)


def _logging_options(function: F) -> F:
    function = click.option("-v", "--verbose", count=True, help="More detail (debug).")(function)
    function = click.option(
        "-q", "--quiet", count=True, help="Less: -q hides progress, -qq all but errors."
    )(function)
    return _option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        help="json: one object per line (time, level, event).",
    )(function)


def _setup_logging(log_format: str, verbose: int, quiet: int) -> None:
    from batchgpt.logs import setup_logging

    setup_logging(log_format, verbose - quiet)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="batchgpt")
def main() -> None:
    """Answer every prompt in a JSONL file through chatgpt.es, crash-safe and resumable."""


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@_option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Results file [default: INPUT.results.jsonl].",
)
@_option(
    "--checkpoint", type=click.Path(path_type=Path), help="Checkpoint file [default: OUTPUT.ckpt]."
)
@_option("--base-url", help="The chat page [default: https://chatgpt.es].")
@_option("--model", help="Default model (gpt-4, gpt-4o, gpt-4o-mini); a line's own model wins.")
@_option("--concurrency", type=int, help="Requests in flight [default: 4].")
@_option("--rate", help="Requests per second for the run: 2, 2/s, 120/min, 5000/h; 0 = unlimited.")
@_option(
    "--sessions",
    type=int,
    help="HTTP sessions (cookie jar + nonce each) [default: min(concurrency, 4)].",
)
@_option("--proxy", "proxies", multiple=True, help="Proxy URL; repeat for several.")
@_option("--proxy-file", type=click.Path(path_type=Path), help="File of proxy URLs, one per line.")
@_option("--retries", type=int, help="Attempts after the first for retryable errors [default: 5].")
@_option(
    "--give-up-after",
    type=float,
    help="Stop (exit 69) once the site is unreachable this long [default: 300 s].",
)
@_option("--timeout", type=float, help="Seconds per request [default: 120].")
@_option("--shard", help="Process only shard K/N of the ids.")
@_option(
    "--shard-count", type=int, help="N shards; K from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID."
)
@_option(
    "--retry-errors",
    is_flag=True,
    default=None,
    help="On resume, run retryable error records again.",
)
@_option(
    "--restart", is_flag=True, default=None, help="Discard output and checkpoint and start over."
)
@_option("--yes", is_flag=True, default=False, help="Do not ask before --restart.")
@_option(
    "--repair",
    is_flag=True,
    default=False,
    help="Drop corrupt lines in the output instead of stopping.",
)
@_option(
    "--format",
    "output_format",
    type=click.Choice(["native", "openai"]),
    help="Output shape [default: native].",
)
@_option(
    "--no-progress",
    is_flag=True,
    default=False,
    help="No progress bar (automatic when stderr is not a TTY).",
)
@_option(
    "--drain-timeout",
    type=float,
    help="Seconds in-flight requests get after SIGINT/SIGTERM [default: 20].",
)
@_option("--max-line-bytes", type=int, help="Longest accepted input line [default: 8 MiB].")
@_option("--sync-lines", type=int, help="fsync output and checkpoint every N lines [default: 512].")
@_option("--sync-seconds", type=float, help="... or every S seconds, whichever first [default: 1].")
@_option(
    "--report", type=click.Path(path_type=Path), help="Also write an HTML report here at the end."
)
@_option(
    "--dry-run", is_flag=True, default=False, help="Print the resolved options as JSON and exit."
)
@_logging_options
@click.pass_context
def run(ctx: click.Context, input_path: Path, **options: Any) -> None:
    """Send every prompt in INPUT (a .jsonl file, or a .toml job file) and write one result each.

    Running the same command again resumes where the last run stopped.
    """
    from batchgpt.jobs import build_config, load_job

    _setup_logging(options.pop("log_format"), options.pop("verbose"), options.pop("quiet"))
    options["format"] = options.pop("output_format")
    options["proxies"] = list(options["proxies"]) or None
    try:
        values: dict[str, Any] = {}
        if input_path.suffix == ".toml":
            values = load_job(input_path)
        else:
            values["input"] = str(input_path)
        for name, value in options.items():
            source = ctx.get_parameter_source(_PARAMS.get(name, name))
            explicit = source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
            if explicit or name not in values:
                values[name] = value
        values["progress"] = not options["no_progress"] and sys.stderr.isatty()
        config = build_config(values)
    except JobError as error:
        _fail(error)
    if options["dry_run"]:
        import json

        click.echo(json.dumps(config.public(), indent=2))
        return
    if config.restart and not options["yes"]:
        if not sys.stdin.isatty():
            _fail(
                UsageError("--restart deletes the output; add --yes to confirm without a terminal")
            )
        click.confirm(f"Delete {config.output} and its checkpoint and start over?", abort=True)
    from batchgpt.progress import summary_lines
    from batchgpt.runner import run as run_job

    try:
        outcome = run_job(config)
    except JobError as error:
        _fail(error)
    for line in summary_lines(outcome.stats, str(config.output)):
        click.echo(f"batchgpt: {line}", err=True)
    if config.report is not None:
        rerun = " ".join(["batchgpt", *map(shlex.quote, sys.argv[1:]), "--retry-errors"])
        _write_report([config.output], config.report, rate=config.rate or None, rerun=rerun)
    sys.exit(outcome.exit_code)


_PARAMS = {"format": "output_format"}


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@_option("--model", default="gpt-4o", help="Default model for lines without one.")
@_option("--max-line-bytes", type=int, default=None, help="Longest accepted line [default: 8 MiB].")
@click.option("--json", "as_json", is_flag=True, help="A machine-readable report on stdout.")
def validate(input_path: Path, model: str, max_line_bytes: int | None, as_json: bool) -> None:
    """Check every line of INPUT without sending anything (exit 65 if any is bad)."""
    from batchgpt.records import InvalidLine
    from batchgpt.validate import validate_file

    def show(problem: InvalidLine) -> None:
        click.echo(f"{input_path}:{problem.line}: {problem.reason}")

    try:
        report = validate_file(
            input_path,
            default_model=model,
            max_line_bytes=max_line_bytes,
            on_problem=None if as_json else show,
        )
    except JobError as error:
        _fail(error)
    if as_json:
        click.echo(report.to_json())
    else:
        click.echo(report.summary(), err=True)
    sys.exit(EXIT_DATAERR if report.invalid else 0)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="A machine-readable report on stdout.")
def status(path: Path, as_json: bool) -> None:
    """Done, errors and remaining for a job, from its INPUT, OUTPUT or job file."""
    from batchgpt.status import job_status

    try:
        report = job_status(path)
    except JobError as error:
        _fail(error)
    click.echo(report.to_json() if as_json else report.text())


@main.command()
@click.argument("output", type=click.Path(path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--input", "input_path", type=click.Path(path_type=Path), help="Check no line of it is missing."
)
def merge(output: Path, shards: tuple[Path, ...], input_path: Path | None) -> None:
    """Join shard outputs into OUTPUT, checking every input line appears exactly once."""
    from batchgpt.merge import merge_outputs

    try:
        merged = merge_outputs(output, list(shards), input_path=input_path)
    except JobError as error:
        _fail(error)
    click.echo(
        f"batchgpt: merged {merged} results from {len(shards)} files into {output}", err=True
    )


@main.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--to", "output_format", type=click.Choice(["native", "openai"]), required=True)
def convert(source: Path, target: Path, output_format: str) -> None:
    """Rewrite a results file in the other output shape."""
    from batchgpt.records import convert_file

    try:
        count = convert_file(source, target, output_format)
    except JobError as error:
        _fail(error)
    click.echo(f"batchgpt: wrote {count} {output_format} results to {target}", err=True)


@main.command()
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
    """Write one self-contained HTML report of one or more results files."""
    from batchgpt.config import parse_rate

    try:
        _write_report(list(results), output, rate=parse_rate(rate) if rate else None)
    except JobError as error:
        _fail(error)


def _write_report(
    results: list[Path], output: Path, *, rate: float | None, rerun: str | None = None
) -> None:
    from batchgpt.report import ReportDependencyError, write_report

    try:
        write_report(results, output, rate=rate, rerun_command=rerun)
    except ReportDependencyError as error:
        _fail(UsageError(str(error)))
    click.echo(f"batchgpt: report written to {output}", err=True)


@main.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Loopback address to serve on."
)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Emulator setting, e.g. latency=0.2.",
)
def emulator(host: str, port: int, settings: tuple[str, ...]) -> None:
    """Serve the local chatgpt.es emulator (for trying things out and for tests)."""
    from batchgpt.emulator import serve_forever

    try:
        changes = dict(setting.split("=", 1) for setting in settings)
    except ValueError:
        _fail(UsageError("--set takes KEY=VALUE"))
    try:
        serve_forever(host, port, changes)
    except (KeyError, ValueError) as error:
        _fail(UsageError(f"--set: {error}"))
    except OSError as error:
        _fail(UsageError(f"cannot serve on {host}:{port}: {error.strerror or error}"))


@main.command()
@click.option(
    "--keep",
    type=click.Path(path_type=Path),
    help="Write the results here instead of a temp folder.",
)
def demo(keep: Path | None) -> None:
    """Run samples/ through the full pipeline against the bundled emulator on loopback."""
    from batchgpt.demo import run_demo

    try:
        sys.exit(run_demo(keep))
    except JobError as error:
        _fail(error)
