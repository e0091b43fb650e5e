"""`batchgpt demo`: the whole pipeline against the bundled emulator, from its packaged prompts."""

from __future__ import annotations

import json
from pathlib import Path

from support import run_cli

from batchgpt.demo import PROMPTS

#: One result per line that is not blank.
RESULTS = sum(1 for line in PROMPTS.read_text().splitlines() if line.strip())


def test_demo_answers_its_prompts_and_keeps_them_beside_the_results(tmp: Path) -> None:
    result = run_cli("demo", "--keep", tmp)
    assert result.returncode == 0, result.stderr
    assert "speaking the AIPKit chat (AI Power 2.4.71), what sites run today" in result.stderr
    prompts = tmp / "demo-prompts.jsonl"
    assert prompts.read_bytes() == PROMPTS.read_bytes()
    records = [json.loads(line) for line in (tmp / "demo-prompts.results.jsonl").open()]
    assert len(records) == RESULTS
    answered = [record for record in records if record["status"] == "ok"]
    assert f"[{answered[0]['id']}] {answered[0]['response']}" in result.stdout
    assert {record["error"]["kind"] for record in records if record["status"] == "error"} == {
        "invalid_input",
        "captcha",
    }


def test_demo_runs_again_in_the_same_folder(tmp: Path) -> None:
    assert run_cli("demo", "--keep", tmp).returncode == 0
    again = run_cli("demo", "--keep", tmp)
    assert again.returncode == 0, again.stderr
    assert f"this run: {RESULTS} results" in again.stdout
