"""batchgpt against real releases of the plugin, through the harness in tests/conformance.

Marked `conformance`; runs only when BATCHGPT_PLUGIN_REPO names the plugin's release mirror
(github:WordPressBugBounty/plugins-gpt3-ai-content-generator) and the user is root, and skips with
the reason otherwise (CI has no such checkout). The harness runs once for the releases in
BATCHGPT_CONFORMANCE_RELEASES (space-separated; default below). Per release, one test says the
harness itself worked (site up, plugin active, chat found, probes ran) and one that batchgpt and
its emulator conform: every check holds, each failed line quoted in the assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RELEASES = tuple(os.environ.get("BATCHGPT_CONFORMANCE_RELEASES", "2.4.71 2.3 2.2").split())
PER_RELEASE_SECONDS = 300

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(PER_RELEASE_SECONDS * len(RELEASES))]


def _skip_reason() -> str | None:
    repo = os.environ.get("BATCHGPT_PLUGIN_REPO")
    if not repo:
        return "BATCHGPT_PLUGIN_REPO is not set (the plugin's release mirror is needed)"
    if not Path(repo).exists():
        return f"BATCHGPT_PLUGIN_REPO={repo} does not exist"
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "the conformance harness needs Linux and root (MariaDB, Apache, apt-get)"
    return None


@pytest.fixture(scope="module")
def reports() -> dict[str, dict[str, Any]]:
    """One harness run for every release of RELEASES, its JSON report by release."""
    if reason := _skip_reason():
        pytest.skip(reason)
    args = [sys.executable, "-m", "tests.conformance", "--json"]
    for release in RELEASES:
        args += ["--release", release]
    done = subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PER_RELEASE_SECONDS * len(RELEASES),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    if done.returncode not in (0, 1):
        pytest.fail(f"harness exited {done.returncode}:\n{done.stderr[-3000:]}")
    return {report["release"]: report for report in json.loads(done.stdout)}


def _failures(report: dict[str, Any]) -> list[str]:
    lines = [f"{c['name']}: {c['summary']}" for c in report["checks"] if c["ok"] is False]
    lines += [
        f"emulator diff {d['probe']}.{d['field']}: "
        f"plugin {d['plugin']!r} emulator {d['emulator']!r}"
        for d in report["diff"]
        if not d["ok"] and report["emulator_ran"]
    ]
    return lines + [f"error: {e}" for e in report["errors"]]


@pytest.mark.parametrize("release", RELEASES)
def test_harness_brings_up_the_release(reports: dict[str, dict[str, Any]], release: str) -> None:
    report = reports[release]
    assert not report["errors"], report["errors"]
    assert report["generation_found"] == report["generation_expected"], report["markup"]


@pytest.mark.parametrize("release", RELEASES)
def test_batchgpt_conforms(reports: dict[str, dict[str, Any]], release: str) -> None:
    report = reports[release]
    failures = _failures(report)
    assert report["passed"] and not failures, "\n".join(failures)
