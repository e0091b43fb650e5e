"""`batchgpt demo`: the samples through the whole pipeline against the bundled emulator."""

from __future__ import annotations

from pathlib import Path

from support import read_results, run_cli


def test_the_demo_answers_the_samples_on_the_aipkit_emulator(tmp: Path) -> None:
    done = run_cli("demo", "--keep", tmp)
    assert done.returncode == 0, done.stderr
    assert "speaking the AIPKit chat (AI Power 2.4.71)" in done.stderr
    assert done.stdout.count("Emulated answer") == 3  # a few answers are shown
    results = read_results(tmp / "prompts.results.jsonl")
    assert sum(r["status"] == "ok" for r in results) == 21
    assert {r["error"]["kind"] for r in results if r["status"] == "error"} == {
        "captcha",
        "invalid_input",
    }
