"""`batchgpt demo`: the whole pipeline against the bundled emulator, on loopback only."""

from __future__ import annotations

import tempfile
from importlib.resources import files
from pathlib import Path

import click
import orjson

from batchgpt.config import RunConfig
from batchgpt.emulator import EmulatorConfig, running_emulator
from batchgpt.emulator.site import describe
from batchgpt.logs import setup_logging
from batchgpt.progress import summary_lines
from batchgpt.runner import run

#: The demo's prompts: every input shape, a captcha and bad lines. Package data, so the demo runs
#: from a wheel as from a checkout; it copies them into its folder, beside the results.
PROMPTS = files("batchgpt") / "demo_prompts.jsonl"
DEMO_SITE = EmulatorConfig(latency=0.05, error_rate=0.05, truncate_rate=0.02, nonce_life=6, seed=7)


def run_demo(keep: Path | None = None) -> int:
    """Run the demo's prompts; print a few results, the summary and where they are."""
    setup_logging()
    folder = keep or Path(tempfile.mkdtemp(prefix="batchgpt-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    prompts = folder / "demo-prompts.jsonl"
    prompts.write_bytes(PROMPTS.read_bytes())
    output = folder / "demo-prompts.results.jsonl"
    with running_emulator(DEMO_SITE) as (_, url):
        click.echo(
            f"emulated chatgpt.es at {url}, speaking {describe(DEMO_SITE)}, what sites run "
            f"today; running {prompts}",
            err=True,
        )
        config = RunConfig.build(
            {
                "input": str(prompts),
                "output": str(output),
                "base_url": url,
                "concurrency": 8,
                "timeout": 10,
                "restart": keep is not None,
            }
        )
        outcome = run(config)
    records = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    for record in [r for r in records if r["status"] == "ok"][:3]:
        click.echo(f"[{record['id']}] {record['response']}")
    for record in [r for r in records if r["status"] == "error"]:
        error = record["error"]
        click.echo(f"[{record['id']}] line {record['line']}: {error['kind']}: {error['message']}")
    for line, _ in summary_lines(outcome.stats, str(output)):
        click.echo(line)
    click.echo("the error records are expected: the demo's prompts hold a captcha and bad lines")
    from batchgpt.report import ReportDependencyError, write_report

    try:
        write_report([output], folder / "report.html", rerun_command=f"batchgpt run {prompts}")
        click.echo(f"report: {folder / 'report.html'}")
    except ReportDependencyError as error:
        click.echo(f"report: skipped ({error})")
    return 0 if outcome.exit_code in (0, 1) else outcome.exit_code
