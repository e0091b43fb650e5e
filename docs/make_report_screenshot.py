"""Regenerate docs/report.png: a demo report rendered by the same headless Chromium as the tests.

Run from the repository root: /work/venv/bin/python docs/make_report_screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_report import CHROMIUM, CHROMIUM_ARGS, make_results, open_offline  # noqa: E402

from batchgpt.report import write_report  # noqa: E402

WIDTH, HEIGHT = 1280, 1400


def main(out: Path = ROOT / "docs" / "report.png") -> None:
    with tempfile.TemporaryDirectory() as scratch:
        results = Path(scratch) / "prompts.results.jsonl"
        make_results(results, 2400, seed=11, per_second=3.6, response_chars=400, hostile=False)
        report = Path(scratch) / "report.html"
        write_report(
            [results],
            report,
            rate=4,
            title="batchgpt report: prompts.results.jsonl",
            rerun_command="batchgpt run prompts.jsonl --rate 4 --retry-errors",
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            opened = open_offline(browser, report, width=WIDTH, height=HEIGHT)
            if opened.blocked or opened.console_errors:
                raise SystemExit(f"report did not render offline: {opened}")
            opened.page.screenshot(path=str(out), full_page=False)
            browser.close()
    print(out)


if __name__ == "__main__":
    main()
