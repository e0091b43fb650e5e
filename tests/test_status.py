"""`batchgpt status`: done, errors and remaining of a job, read-only, from its INPUT, its OUTPUT or
its job file, with the job's files found the way `run` finds them (a job file's own `output` and
`checkpoint` included), and which run holds it now.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import (
    CLI,
    batchgpt,
    complete_lines,
    finish,
    read_results,
    run_args,
    spawn_fixture,  # noqa: F401  (the `spawn` fixture)
    wait_for,
    write_prompts,
)


@pytest.mark.emulator_config(latency=0.2)
def test_status_reports_done_errors_remaining_and_the_running_holder(
    emulator, tmp: Path, spawn
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 16)
    with prompts.open("a") as stream:
        stream.write(json.dumps({"id": "c1", "prompt": "one [captcha]"}) + "\n")
        stream.write("this is not json\n")
        stream.write(json.dumps({"id": "c2", "prompt": "two [captcha]"}) + "\n")
        stream.write(json.dumps({"id": "s1", "prompt": "bad [site-error]"}) + "\n")
    total = len(ids) + 4
    args = run_args(prompts, emulator.url, "--concurrency", "2")
    process = spawn(args)
    try:
        assert wait_for(lambda: complete_lines(output) >= 2, 20)
        running = batchgpt([*CLI, "status", str(prompts), "--json"])
        assert running.returncode == 0, running.stderr
        report = json.loads(running.stdout)
        assert report["running"] == f"pid {process.pid} on {os.uname().nodename}"
        assert report["output"] == str(output)
        assert 0 < report["done"] < total
        assert report["remaining"] == total - report["done"]
    finally:
        code, _, err = finish(process)
    assert code == 1, err

    for path in (prompts, output):
        text = batchgpt([*CLI, "status", str(path)])
        assert text.returncode == 0, text.stderr
        assert f"done:      {total} ({len(ids)} ok)" in text.stdout
        assert "errors:    4 (captcha 2, invalid_input 1, site_error 1)" in text.stdout
        assert "remaining: 0" in text.stdout
        assert "running:   no" in text.stdout
        report = json.loads(batchgpt([*CLI, "status", str(path), "--json"]).stdout)
        assert report["errors"] == {"captcha": 2, "invalid_input": 1, "site_error": 1}
        assert (report["done"], report["ok"], report["remaining"]) == (total, len(ids), 0)
        assert report["running"] is None

    posts = emulator.stats.posts
    again = batchgpt(args)  # finished with error records: exit 1, nothing sent
    assert again.returncode == 1, again.stderr
    assert emulator.stats.posts == posts


def status_of(path: Path, *, cwd: Path | None = None) -> dict:
    shown = batchgpt([*CLI, "status", str(path), "--json"], cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_a_job_files_own_output_and_checkpoint_are_the_ones_read(emulator, tmp: Path) -> None:
    data, state = tmp / "data", tmp / "state"
    data.mkdir()
    state.mkdir()
    ids = write_prompts(data / "prompts.jsonl", 9)
    with (data / "prompts.jsonl").open("a") as stream:
        stream.write(json.dumps({"id": "gate", "prompt": "a [captcha]"}) + "\n")
    job = tmp / "nightly.toml"
    job.write_text(
        'input = "data/prompts.jsonl"\n'
        'output = "state/answers.jsonl"\n'
        'checkpoint = "state/progress.json"\n'
        f'base_url = "{emulator.url}"\n'
    )
    ran = batchgpt([*CLI, "run", str(job), "--no-progress"])
    assert ran.returncode == 1, ran.stderr
    assert sorted(p.name for p in state.iterdir()) == [
        "answers.jsonl",
        "answers.jsonl.lock",
        "progress.json",
    ]

    report = status_of(job)

    assert report["output"] == str(state / "answers.jsonl")
    assert (report["done"], report["ok"], report["errors"]) == (10, 9, {"captcha": 1})
    assert report["remaining"] == 0  # counted from the input the custom checkpoint names
    assert report["updated_at"] is not None
    assert report["running"] is None
    text = batchgpt([*CLI, "status", str(job)]).stdout
    assert "done:      10 (9 ok)" in text and "remaining: 0" in text
    assert len(read_results(state / "answers.jsonl")) == len(ids) + 1


def test_status_of_a_shard_counts_only_its_lines(emulator, tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 30)
    done = batchgpt(run_args(prompts, emulator.url, "--shard", "1/3"))
    assert done.returncode == 0, done.stderr
    output = tmp / "prompts.shard-1-of-3.results.jsonl"
    mine = len(read_results(output))

    report = status_of(output)

    assert report["shard"] == "1/3"
    assert (report["done"], report["remaining"]) == (mine, 0)
    assert "(shard 1/3)" in batchgpt([*CLI, "status", str(output)]).stdout


def test_status_reads_and_never_writes(emulator, tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 6)
    assert batchgpt(run_args(prompts, emulator.url)).returncode == 0
    output = tmp / "prompts.results.jsonl"
    with output.open("ab") as stream:
        stream.write(b'{"id": "q9", "li')  # a torn tail, as after kill -9
    before = {p.name: p.read_bytes() for p in tmp.iterdir()}

    report = status_of(prompts)

    assert (report["done"], report["remaining"]) == (6, 0)
    assert {p.name: p.read_bytes() for p in tmp.iterdir()} == before


def test_status_of_no_job_is_exit_2(tmp: Path) -> None:
    write_prompts(tmp / "prompts.jsonl", 2)
    shown = batchgpt([*CLI, "status", str(tmp / "prompts.jsonl")])
    assert shown.returncode == 2
    assert "no job found" in shown.stderr
    assert str(tmp / "prompts.results.jsonl") in shown.stderr
    assert "Traceback" not in shown.stderr
