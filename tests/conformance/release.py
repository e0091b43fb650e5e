"""Check one plugin release end to end, in phases, each failure recorded rather than fatal.

1. a fresh site with the release installed, configured and on a page (the site's front page,
   as chatgpt.es has it, and a second page at /chat/);
2. the page read by the harness, and `batchgpt probe` (when the command exists);
3. the probes and experiments against the real plugin (captured when asked);
4. `batchgpt run` of 20 prompts: answers, upstream framing, requests per prompt;
5. `batchgpt run` with the base URL of the /chat/ page (a page with a path);
6. `batchgpt run` of 10 prompts at 1/s with the nonce life cut to 6 s: a real nonce expiry;
7. the guest quota experiment;
8. the same probes against batchgpt's emulator, and the diff.
Everything started here is stopped, and the temporary folder removed, whatever happens.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conformance import experiments, instrument
from tests.conformance import plugin as plugin_setup
from tests.conformance.captures import Captures
from tests.conformance.emulated import running_emulator
from tests.conformance.plugin import ChatSetup
from tests.conformance.probes import AIPKIT_PROBES, LEGACY_PROBES, ProbeRun, diff, run_probes
from tests.conformance.report import ReleaseReport
from tests.conformance.runs import (
    CliRun,
    check_prompts,
    make_prompts,
    probe_command,
    run_batch,
    summarise,
    traffic,
)
from tests.conformance.shapes import sse_events
from tests.conformance.upstream import FakeOpenAI, running_upstream
from tests.conformance.wordpress import WordPress, parse_access

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIN_PROMPTS = 20
EXPIRY_PROMPTS = 10
EXPIRY_NONCE_LIFE = 6
EXPIRY_RATE = "1"
REQUESTS_PER_PROMPT = {"legacy": 1, "aipkit": 2}
SCRAPE_ALLOWANCE = 0.25


@dataclass
class Options:
    repo: Path
    captures: Path | None = None
    keep: bool = False
    workroot: Path | None = None


def check_release(release: str, options: Options) -> ReleaseReport:
    report = ReleaseReport(release, generation_expected=plugin_setup.generation_of(release))
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix=f"batchgpt-conformance-{release}-", dir=options.workroot))
    root.chmod(0o755)
    try:
        with running_upstream(root / "upstream.jsonl") as (upstream, upstream_url):
            site = WordPress(root / "site", upstream_url)
            try:
                site.start()
                instrument.install(site)
                report.commit = plugin_setup.install(site, options.repo, release)
                setup = plugin_setup.configure(site, release, upstream_url)
                _phases(report, site, setup, upstream, root, options)
            except Exception as exc:
                report.errors.append(f"{type(exc).__name__}: {exc}")
                (root / "harness-error.txt").write_text(traceback.format_exc())
            finally:
                site.stop()
    finally:
        report.seconds = time.monotonic() - started
        if options.keep:
            report.add("kept", None, str(root))
        else:
            shutil.rmtree(root, ignore_errors=True)
    return report


def _phases(
    report: ReleaseReport,
    site: WordPress,
    setup: ChatSetup,
    upstream: FakeOpenAI,
    root: Path,
    options: Options,
) -> None:
    generation = setup.generation
    findings: dict[str, Any] = {"setup": setup.settings, "upstream_route": setup.upstream_route}

    real = run_probes("plugin", generation, setup.page_url)
    facts = real.facts
    report.generation_found = (facts.generation if facts else None) or "none"
    report.markup = facts.summary() if facts else ""
    report.add(
        "page generation",
        report.generation_found == generation,
        f"{report.generation_found} (expected {generation})",
    )
    if real.error:
        report.errors.append(f"probes: {real.error}")
    probe = probe_command(setup.page_url, REPO_ROOT)
    if probe.available:
        report.add(
            "batchgpt probe", probe.exit_code == 0, f"exit {probe.exit_code}", output=probe.output
        )
    else:
        report.add(
            "batchgpt probe",
            None,
            "not available (fell back to the harness' own GET)",
            output=probe.output,
        )
    report.bad_nonce = _bad_nonce_answers(real, generation)

    findings["experiments"] = _experiments(real, site, setup, upstream, generation, quota=False)
    workdir = root / "runs"
    main = _run_and_check(
        report,
        "answers",
        site,
        upstream,
        workdir,
        setup.page_url,
        make_prompts("main", MAIN_PROMPTS),
        (),
    )
    per_prompt = REQUESTS_PER_PROMPT[generation] + SCRAPE_ALLOWANCE
    traffic_main = main["traffic"]
    report.add(
        "requests per prompt",
        main["summary"]["answered"] == MAIN_PROMPTS
        and traffic_main.per_prompt(MAIN_PROMPTS) <= per_prompt,
        f"{traffic_main.per_prompt(MAIN_PROMPTS):.2f} ({traffic_main.breakdown() or 'none'})",
        statuses=traffic_main.statuses,
        actions=traffic_main.actions,
    )
    path_run = _run_and_check(
        report, None, site, upstream, workdir, setup.path_url, make_prompts("path", 2), ()
    )
    summary = path_run["summary"]
    report.add(
        "page with a path",
        summary["correct"] == 2,
        f"--base-url {setup.path_url}: {summary['correct']}/2 correct, exit "
        f"{path_run['run'].exit_code}; {path_run['traffic'].breakdown() or 'no requests'}",
        first_error=summary["first_error"],
    )
    _nonce_expiry(report, site, upstream, workdir, setup)
    findings["experiments"].update(
        _experiments(real, site, setup, upstream, generation, quota=True)
    )
    _emulator_diff(report, real, generation, root)
    report.experiments = findings["experiments"]
    findings["shapes"] = real.shapes()
    findings["bad_nonce"] = report.bad_nonce
    if options.captures and real.client:
        captures = Captures(options.captures, setup.release)
        if facts:
            captures.page(real.main["page"], facts)
        captures.exchanges(real.client.exchanges)
        captures.upstream(upstream.since(0))
        captures.findings(findings)


def _run_and_check(
    report: ReleaseReport,
    name: str | None,
    site: WordPress,
    upstream: FakeOpenAI,
    workdir: Path,
    base_url: str,
    prompts: list[dict[str, str]],
    extra: tuple[str, ...],
) -> dict[str, Any]:
    mark, offset, events = upstream.mark(), site.web.access_offset(), site.events_offset()
    run = run_batch(workdir, prompts[0]["id"].split("-")[0], base_url, prompts, extra)
    checks = check_prompts(run, prompts, upstream.since(mark))
    summary = summarise(checks)
    seen = traffic(parse_access(site.web.access_lines(offset)), site.events(events))
    if name:
        count = summary["prompts"]
        error = summary["first_error"]
        if error:
            why = f"; first error {error.get('kind')}: {str(error.get('message'))[:160]}"
        elif run.exit_code != 0:
            why = f"; stderr: {_last_line(run.stderr)[:200]}"
        else:
            why = ""
        report.add(
            "answers correct",
            summary["correct"] == count,
            f"{summary['correct']}/{count} (exit {run.exit_code}{why})",
            command=" ".join(run.args),
            stderr=run.stderr[-1500:],
            **summary,
        )
        report.add(
            "upstream framing",
            summary["framing_ok"] == count and summary["once"] == count,
            f"{summary['framing_ok']}/{count} framed as SYSTEM_PROMPT + ' ' + prompt, "
            f"{summary['once']}/{count} exactly once, "
            f"{summary['reached_upstream']}/{count} reached the AI",
        )
    return {"run": run, "summary": summary, "traffic": seen}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(nothing)"


def _nonce_expiry(
    report: ReleaseReport, site: WordPress, upstream: FakeOpenAI, workdir: Path, setup: ChatSetup
) -> None:
    instrument.set_nonce_life(site, EXPIRY_NONCE_LIFE)
    try:
        outcome = _run_and_check(
            report,
            None,
            site,
            upstream,
            workdir,
            setup.page_url,
            make_prompts("expiry", EXPIRY_PROMPTS),
            ("--rate", EXPIRY_RATE),
        )
    finally:
        instrument.set_nonce_life(site, None)
    run: CliRun = outcome["run"]
    summary, seen = outcome["summary"], outcome["traffic"]
    refused = sum(seen.nonce_failures.values())
    scrapes = seen.kinds.get("GET page", 0)
    recovered = summary["correct"] == EXPIRY_PROMPTS
    report.add(
        "nonce expiry",
        refused > 0 and recovered,
        f"{'recovered' if recovered else 'NOT recovered'}: {summary['correct']}/{EXPIRY_PROMPTS}"
        f" correct over {run.seconds:.0f} s with nonce_life {EXPIRY_NONCE_LIFE} s; the server "
        f"refused {refused} expired nonce(s); {scrapes} page GETs"
        + ("" if refused else "; no request reached a nonce check after its nonce expired"),
        exit_code=run.exit_code,
        statuses=seen.statuses,
        actions=seen.actions,
        nonce_failures=seen.nonce_failures,
        first_error=summary["first_error"],
    )


def _bad_nonce_answers(real: ProbeRun, generation: str) -> list[dict[str, Any]]:
    names = (
        ("legacy_bad_nonce",) if generation == "legacy" else ("cache_bad_nonce", "stream_bad_nonce")
    )
    answers = []
    for name in names:
        exchange = real.main.get(name)
        if exchange is None:
            continue
        body = exchange.text
        if exchange.content_type == "text/event-stream":
            body = " ".join(f"event:{n} {d}" for n, d in sse_events(body) if n != ":")
        answers.append(
            {
                "request": name,
                "status": exchange.status,
                "content_type": exchange.content_type,
                "body": body.strip()[:300],
            }
        )
    return answers


def _experiments(
    real: ProbeRun,
    site: WordPress,
    setup: ChatSetup,
    upstream: FakeOpenAI,
    generation: str,
    *,
    quota: bool,
) -> dict[str, Any]:
    client, facts = real.client, real.facts
    if client is None or facts is None or not facts.generation:
        return {"skipped": "no chat markup on the page"}
    results: dict[str, Any] = {}
    steps: dict[str, Any]
    if quota:
        steps = {
            "guest_quota": lambda: experiments.guest_quota(
                client, site, setup, setup.page_url, upstream
            )
        }
    elif generation == "aipkit":
        steps = {
            "history": lambda: experiments.aipkit_history(client, facts, setup.page_url, upstream),
            "upstream_failures": lambda: experiments.upstream_failures(
                client, facts, setup.page_url, generation, upstream
            ),
            "extras": lambda: experiments.aipkit_extras(client, facts, setup.page_url),
        }
    else:
        steps = {
            "history": lambda: experiments.legacy_history(client, facts, setup.page_url, upstream),
            "upstream_failures": lambda: experiments.upstream_failures(
                client, facts, setup.page_url, generation, upstream
            ),
        }
    for name, step in steps.items():
        try:
            results[name] = step()
        except Exception as exc:  # an experiment that crashes is reported, not fatal
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return results


def _emulator_diff(report: ReleaseReport, real: ProbeRun, generation: str, root: Path) -> None:
    names = LEGACY_PROBES if generation == "legacy" else AIPKIT_PROBES
    bots = real.facts.bots if real.facts else []
    bot_mode = None
    if bots:
        bot_mode = "popup" if bots[0].element == "aipkit_popup_wrapper" else "inline"
    with running_emulator(generation, report.release, root, bot_mode) as emulator:
        report.emulator_note = emulator.note
        emulated = run_probes("emulator", generation, emulator.url + "/") if emulator.url else None
    report.emulator_ran = emulated is not None
    report.diff = diff(real, emulated, names)
    failed = sum(not line.ok for line in report.diff)
    if emulated is None:
        report.add("emulator diff", False, emulator.note)
    else:
        report.add(
            "emulator diff",
            failed == 0,
            f"{len(report.diff) - failed}/{len(report.diff)} lines equal",
            emulator_error=emulated.error,
        )
