"""`batchgpt validate`: every line checked as `run` would read it, nothing sent.

It reports each bad line as FILE:LINE: REASON (or as JSON), exits 65 when any line is bad, and
checks models through the backend's own check, as `run` does: an unknown `--model` is exit 2 in
both, and a line's unknown model is the same reason in validate's report and in run's record.
"""

from __future__ import annotations

import json
from pathlib import Path

from support import (
    CLI,
    MAX_LINE,
    batchgpt,
    mixed_file,
    mixed_prompts,
    read_results,
    run_args,
    run_cli,
    write_jsonl,
)

from batchgpt.config import RunConfig
from batchgpt.validate import KEEP_PROBLEMS, reason_category, validate_file


def test_validate_reports_every_bad_line_as_file_line_reason(tmp: Path) -> None:
    path, good_lines, reasons = mixed_file(tmp)

    done = run_cli("validate", path, "--max-line-bytes", str(MAX_LINE))

    assert done.returncode == 65
    lines = done.stdout.splitlines()
    assert len(lines) == len(reasons)
    for text, (number, reason) in zip(lines, sorted(reasons.items()), strict=True):
        assert text.startswith(f"{path}:{number}: ")
        assert reason in text
    assert f"{len(good_lines)} valid, {len(reasons)} invalid" in done.stderr
    assert not (tmp / "prompts.results.jsonl").exists()


def test_validate_json_is_machine_readable(tmp: Path) -> None:
    path, good_lines, reasons = mixed_file(tmp)

    done = run_cli("validate", path, "--json", "--max-line-bytes", str(MAX_LINE))

    assert done.returncode == 65
    report = json.loads(done.stdout)
    assert report["valid"] == len(good_lines)
    assert report["invalid"] == len(reasons)
    assert [p["line"] for p in report["problems"]] == sorted(reasons)
    assert sum(report["reasons"].values()) == len(reasons)
    assert report["problems_truncated"] is False
    assert sum(report["models"].values()) == len(good_lines)


def test_validate_a_clean_file_exits_0(tmp: Path) -> None:
    path = tmp / "clean.jsonl"
    path.write_bytes(b"".join(json.dumps(obj).encode() + b"\n" for obj in mixed_prompts(9)))

    done = run_cli("validate", path)

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "9 valid, 0 invalid" in done.stderr


def test_validate_a_missing_file_is_a_usage_error(tmp: Path) -> None:
    done = run_cli("validate", tmp / "missing.jsonl")
    assert done.returncode == 2
    assert "missing.jsonl" in done.stderr


# the same checks as run ------------------------------------------------------------------------


def test_an_unknown_model_option_is_exit_2_in_validate_as_in_run(tmp: Path) -> None:
    path = write_jsonl(tmp / "prompts.jsonl", mixed_prompts(3))
    validated = run_cli("validate", path, "--model", "gpt-5")
    ran = batchgpt(run_args(path, "http://127.0.0.1:9", "--model", "gpt-5"))

    assert (validated.returncode, ran.returncode) == (2, 2)
    refusal = "--model 'gpt-5': unknown model 'gpt-5' (known: gpt-4, gpt-4o, gpt-4o-mini)"
    assert refusal in validated.stderr and refusal in ran.stderr
    assert "valid" not in validated.stderr  # no report of a run that would not start
    assert sorted(p.name for p in tmp.iterdir()) == ["prompts.jsonl"]


def test_a_lines_unknown_model_reads_the_same_in_validate_and_in_runs_record(
    emulator, tmp: Path
) -> None:
    path = write_jsonl(
        tmp / "prompts.jsonl",
        [{"id": "ok", "prompt": "hello"}, {"id": "bad", "prompt": "hello", "model": "gpt-5"}],
    )
    validated = run_cli("validate", path, "--json")
    ran = batchgpt(run_args(path, emulator.url))

    assert validated.returncode == 65
    (problem,) = json.loads(validated.stdout)["problems"]
    assert ran.returncode == 1, ran.stderr
    record = next(r for r in read_results(tmp / "prompts.results.jsonl") if r["id"] == "bad")
    assert record["error"]["kind"] == "invalid_input"
    assert record["error"]["message"] == problem["reason"]
    assert problem["reason"] == "unknown model 'gpt-5' (known: gpt-4, gpt-4o, gpt-4o-mini)"
    assert emulator.stats.posts == 1  # only the good line was sent


def test_a_job_file_gives_validate_its_model_and_line_limit(tmp: Path) -> None:
    path, good_lines, reasons = mixed_file(tmp)
    job = tmp / "job.toml"
    job.write_text(f'input = "prompts.jsonl"\nmodel = "gpt-4"\nmax_line_bytes = {MAX_LINE}\n')

    done = batchgpt([*CLI, "validate", str(job), "--json"])

    assert done.returncode == 65, done.stderr
    report = json.loads(done.stdout)
    assert report["path"] == str(path)
    assert (report["valid"], report["invalid"]) == (len(good_lines), len(reasons))
    without_model = sum(1 for obj in good_lines.values() if "model" not in obj.get("body", obj))
    assert report["models"]["gpt-4"] >= without_model  # the job's model for lines without one

    job.write_text('input = "prompts.jsonl"\nmodel = "gpt-5"\n')
    refused = batchgpt([*CLI, "validate", str(job)])
    assert refused.returncode == 2
    assert "--model 'gpt-5'" in refused.stderr


# the report ------------------------------------------------------------------------------------


def test_reasons_are_counted_without_their_particulars() -> None:
    assert reason_category("unknown model 'gpt-5' (known: gpt-4, gpt-4o)") == "unknown model"
    assert reason_category("duplicate id 'm0' (first on line 1)") == "duplicate id"
    assert reason_category("messages[2] has unknown role 'robot'") == "messages has unknown role"
    assert reason_category("longer than 2000 bytes") == "longer than bytes"


def test_json_keeps_the_first_problems_and_counts_every_one(tmp: Path) -> None:
    lines = ["{not json"] * (KEEP_PROBLEMS + 5) + [json.dumps({"prompt": "fine"})]
    path = write_jsonl(tmp / "prompts.jsonl", lines)
    seen: list[int] = []

    report = validate_file(
        RunConfig.build({"input": path}), on_problem=lambda problem: seen.append(problem.line)
    )

    assert (report.valid, report.invalid) == (1, KEEP_PROBLEMS + 5)
    assert seen == list(range(1, KEEP_PROBLEMS + 6))
    shown = json.loads(report.to_json())
    assert len(shown["problems"]) == KEEP_PROBLEMS
    assert shown["problems_truncated"] is True
    assert shown["reasons"] == {"not JSON": KEEP_PROBLEMS + 5}
    assert shown["models"] == {"gpt-4o": 1}
