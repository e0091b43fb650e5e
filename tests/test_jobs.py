"""Issue #6: job files, option precedence, shards and merge, and proxies, through the real CLI.

A job file's relative paths resolve against its folder; every option comes from the command line,
else BATCHGPT_<OPTION>, else the job file. Shards split ids by a stable hash and `merge` joins
them; proxies carry the sessions and their credentials are never written anywhere.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from support import (
    CLI,
    answer_of,
    assert_exactly_once,
    batchgpt,
    cli_env,
    complete_lines,
    read_results,
    run_args,
    running_proxy,
    spawn_fixture,  # noqa: F401  (the `spawn` fixture)
    wait_for,
    write_prompts,
)


def dry_run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> dict:
    result = batchgpt([*CLI, "run", *args, "--dry-run"], env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# job files ------------------------------------------------------------------------------------


@pytest.mark.emulator_config(latency=0.05)
def test_a_job_file_runs_and_resumes_from_another_folder(emulator, tmp: Path, spawn) -> None:
    project = tmp / "project"
    for folder in ("jobs", "data", "results"):
        (project / folder).mkdir(parents=True)
    ids = write_prompts(project / "data" / "prompts.jsonl", 80)
    job = project / "jobs" / "nightly.toml"
    job.write_text(
        'input = "../data/prompts.jsonl"\n'
        'output = "../results/nightly.jsonl"\n'
        f'base_url = "{emulator.url}"\n'
        "concurrency = 4\n"
    )
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    args = [*CLI, "run", "../project/jobs/nightly.toml", "--no-progress"]
    output = project / "results" / "nightly.jsonl"

    first = spawn(args, cwd=elsewhere)
    assert wait_for(lambda: complete_lines(output) >= 5, 20)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert complete_lines(output) < len(ids)

    resumed = batchgpt(args, cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)
    assert (project / "results" / "nightly.jsonl.ckpt").is_file()
    assert list(elsewhere.iterdir()) == []
    assert [p.name for p in (project / "jobs").iterdir()] == ["nightly.toml"]

    status = batchgpt([*CLI, "status", "../project/jobs/nightly.toml"], cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    assert f"done:      {len(ids)} ({len(ids)} ok)" in status.stdout
    assert "remaining: 0" in status.stdout


def test_options_come_from_command_line_then_environment_then_job_file(tmp: Path) -> None:
    write_prompts(tmp / "prompts.jsonl", 3)
    job = tmp / "job.toml"
    job.write_text(
        'input = "prompts.jsonl"\n'
        "concurrency = 2\n"
        'model = "gpt-4"\n'
        'rate = "120/min"\n'
        "retries = 1\n"
        "timeout = 30\n"
    )
    env = cli_env(BATCHGPT_CONCURRENCY="3", BATCHGPT_MODEL="gpt-4o-mini", BATCHGPT_RETRIES="2")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()

    everything = dry_run(str(job), "--concurrency", "5", env=env, cwd=elsewhere)
    assert everything["concurrency"] == 5  # command line over environment and file
    assert everything["model"] == "gpt-4o-mini"  # environment over file
    assert everything["retries"] == 2
    assert everything["rate"] == 2.0  # the file over the default
    assert everything["timeout"] == 30.0
    assert everything["give_up_after"] == 300.0  # the default
    assert everything["input"] == str(tmp / "prompts.jsonl")
    assert everything["output"] == str(tmp / "prompts.results.jsonl")

    assert dry_run(str(job), env=env)["concurrency"] == 3
    from_file = dry_run(str(job))
    assert (from_file["concurrency"], from_file["model"], from_file["retries"]) == (2, "gpt-4", 1)
    assert dry_run(str(job), "--model", "gpt-4o", env=env)["model"] == "gpt-4o"
    plain = dry_run(str(tmp / "prompts.jsonl"), env=env)
    assert (plain["concurrency"], plain["model"], plain["rate"]) == (3, "gpt-4o-mini", 0.0)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('input = "p.jsonl"\nconcurency = 4\n', "concurency"),
        ('input = "p.jsonl"\nconcurrency = "4"\n', "concurrency"),
        ('input = "p.jsonl"\nconcurrency = true\n', "concurrency"),
        ('input = "p.jsonl"\nretry_errors = "yes"\n', "retry_errors"),
        ('input = "p.jsonl"\nproxies = "http://127.0.0.1:1"\n', "proxies"),
        ('input = "p.jsonl"\nproxies = [1, 2]\n', "proxies"),
        ('output = "out.jsonl"\n', "input"),
    ],
    ids=[
        "unknown",
        "string-for-int",
        "bool-for-int",
        "string-for-bool",
        "string-for-list",
        "ints-in-list",
        "missing-input",
    ],
)
def test_a_bad_job_file_exits_2_naming_the_key_and_the_file(tmp: Path, body: str, key: str) -> None:
    job = tmp / "job.toml"
    job.write_text(body)
    for command in ("run", "status"):
        result = batchgpt([*CLI, command, str(job)])
        assert result.returncode == 2, (command, result.stderr)
        assert str(job) in result.stderr
        assert repr(key) in result.stderr
        assert "Traceback" not in result.stderr
    assert [p.name for p in tmp.iterdir()] == ["job.toml"]


def test_a_job_file_that_is_not_toml_exits_2(tmp: Path) -> None:
    job = tmp / "job.toml"
    job.write_text('input = "p.jsonl\n')
    result = batchgpt([*CLI, "run", str(job)])
    assert result.returncode == 2
    assert str(job) in result.stderr and "TOML" in result.stderr


def test_an_output_in_a_missing_folder_exits_2(tmp: Path) -> None:
    write_prompts(tmp / "prompts.jsonl", 2)
    output = tmp / "missing" / "out.jsonl"
    result = batchgpt(run_args(tmp / "prompts.jsonl", "http://127.0.0.1:9", "-o", str(output)))
    assert result.returncode == 2, result.stderr
    assert str(tmp / "missing") in result.stderr
    assert "Traceback" not in result.stderr


# shards ---------------------------------------------------------------------------------------


def shard_output(prompts: Path, index: int, count: int = 3) -> Path:
    return prompts.with_name(f"prompts.shard-{index}-of-{count}.results.jsonl")


def test_three_shards_answer_every_id_once_and_merge(emulator, tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    ids = write_prompts(prompts, 60)
    runs = [
        (["--shard", "0/3"], {}),
        (["--shard-count", "3"], {"JOB_COMPLETION_INDEX": "1"}),  # a Kubernetes Indexed Job
        (["--shard-count", "3"], {"SLURM_ARRAY_TASK_ID": "2"}),  # a Slurm array task
    ]
    for options, variables in runs:
        result = batchgpt(run_args(prompts, emulator.url, *options), env=cli_env(**variables))
        assert result.returncode == 0, result.stderr
    shards = [shard_output(prompts, index) for index in range(3)]
    per_shard = [[record["id"] for record in read_results(shard)] for shard in shards]
    assert all(per_shard), "every shard should own some of 60 ids"
    assert sorted(i for shard_ids in per_shard for i in shard_ids) == sorted(ids)
    assert sum(emulator.stats.answered.values()) == len(ids)
    assert not (tmp / "prompts.results.jsonl").exists()

    merged = tmp / "merged.jsonl"
    result = batchgpt([*CLI, "merge", str(merged), *map(str, shards)])
    assert result.returncode == 0, result.stderr
    assert_exactly_once(merged, ids)

    overlap = tmp / "overlap.jsonl"
    result = batchgpt([*CLI, "merge", str(overlap), *map(str, [*shards, shards[1]])])
    assert result.returncode != 0
    assert f"id {per_shard[1][0]!r}" in result.stderr
    assert str(shards[1]) in result.stderr
    assert not overlap.exists()

    missing = tmp / "missing.jsonl"
    result = batchgpt(
        [*CLI, "merge", str(missing), str(shards[0]), str(shards[2]), "--input", str(prompts)]
    )
    assert result.returncode != 0
    lines_of_shard_1 = sorted(int(i.removeprefix("q")) + 1 for i in per_shard[1])
    assert f"{len(lines_of_shard_1)} lines of {prompts} have no result" in result.stderr
    assert ", ".join(map(str, lines_of_shard_1[:5])) in result.stderr
    assert not missing.exists()

    before = shards[1].read_bytes()
    refused = batchgpt(run_args(prompts, emulator.url, "--shard", "1/4", "-o", str(shards[1])))
    assert refused.returncode == 2, refused.stderr
    assert "shard '1/3' → '1/4'" in refused.stderr
    assert "--restart" in refused.stderr
    assert shards[1].read_bytes() == before


def test_shard_count_takes_the_index_from_the_scheduler(tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 3)
    k8s = dry_run(str(prompts), "--shard-count", "3", env=cli_env(JOB_COMPLETION_INDEX="2"))
    assert k8s["shard"] == "2/3"
    assert k8s["output"] == str(shard_output(prompts, 2))
    assert k8s["checkpoint"] == str(shard_output(prompts, 2)) + ".ckpt"
    slurm = dry_run(str(prompts), "--shard-count", "3", env=cli_env(SLURM_ARRAY_TASK_ID="0"))
    assert slurm["shard"] == "0/3"
    assert slurm["output"] == str(shard_output(prompts, 0))
    both = cli_env(JOB_COMPLETION_INDEX="1", SLURM_ARRAY_TASK_ID="2")
    assert dry_run(str(prompts), "--shard-count", "3", env=both)["shard"] == "1/3"
    from_env = cli_env(BATCHGPT_SHARD_COUNT="3", SLURM_ARRAY_TASK_ID="1")
    assert dry_run(str(prompts), env=from_env)["shard"] == "1/3"
    assert dry_run(str(prompts), "--shard", "2/5")["output"] == str(shard_output(prompts, 2, 5))

    for args, env, words in [
        (["--shard-count", "3"], cli_env(), ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"]),
        (["--shard-count", "3"], cli_env(JOB_COMPLETION_INDEX="3"), ["JOB_COMPLETION_INDEX"]),
        (["--shard-count", "3"], cli_env(SLURM_ARRAY_TASK_ID="x"), ["SLURM_ARRAY_TASK_ID"]),
        (["--shard", "3/3"], cli_env(), ["3/3"]),
        (["--shard", "1/3", "--shard-count", "3"], cli_env(JOB_COMPLETION_INDEX="1"), ["not both"]),
    ]:
        result = batchgpt([*CLI, "run", str(prompts), *args, "--dry-run"], env=env)
        assert result.returncode == 2, (args, result.stderr)
        for word in words:
            assert word in result.stderr, (args, result.stderr)


# proxies --------------------------------------------------------------------------------------


def test_proxy_credentials_appear_nowhere(emulator, tmp: Path, closed_port: int) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 30)
    proxy = f"http://user:secret@127.0.0.1:{closed_port}"
    base = run_args(prompts, emulator.url, "--proxy", proxy, "--give-up-after", "1")
    seen: list[str] = []

    preview = batchgpt([*base, "--dry-run"])
    assert preview.returncode == 0
    assert json.loads(preview.stdout)["proxies"] == [f"http://***@127.0.0.1:{closed_port}"]
    seen += [preview.stdout, preview.stderr]

    for extra in (["--retries", "0"], ["--log-format", "json", "-v"]):
        result = batchgpt([*base, *extra])
        assert result.returncode == 69, result.stderr
        seen += [result.stdout, result.stderr]
    records = read_results(tmp / "prompts.results.jsonl")
    assert records, "--retries 0 should have recorded connection errors"
    assert {record["error"]["kind"] for record in records} == {"connection"}

    for command in (["status", str(prompts)], ["status", str(prompts), "--json"]):
        status = batchgpt([*CLI, *command])
        assert status.returncode == 0
        seen += [status.stdout, status.stderr]
    files = {path.name: path.read_bytes() for path in tmp.iterdir() if path != prompts}
    assert set(files) >= {"prompts.results.jsonl", "prompts.results.jsonl.ckpt"}
    assert any(name.endswith(".lock") for name in files)
    for name, data in files.items():
        assert b"secret" not in data, name
    for text in seen:
        assert "secret" not in text, text
        assert "user:" not in text, text


SPREAD = ("--sessions", "4", "--concurrency", "4")


def test_sessions_are_spread_over_proxies(emulator, tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    ids = write_prompts(prompts, 40)
    with running_proxy() as (first, first_url), running_proxy() as (second, second_url):
        proxies = ["--proxy", first_url, "--proxy", second_url]
        result = batchgpt(run_args(prompts, emulator.url, *SPREAD, *proxies))
        assert result.returncode == 0, result.stderr
    assert_exactly_once(tmp / "prompts.results.jsonl", ids)
    assert first.requests > 0 and second.requests > 0
    assert first.requests + second.requests == emulator.stats.requests
    assert min(first.requests, second.requests) >= (first.requests + second.requests) // 4


def test_a_dead_proxy_is_routed_around(emulator, tmp: Path, closed_port: int) -> None:
    prompts = tmp / "prompts.jsonl"
    ids = write_prompts(prompts, 40)
    with running_proxy() as (live, live_url):
        proxies = ["--proxy", f"http://127.0.0.1:{closed_port}", "--proxy", live_url]
        result = batchgpt(run_args(prompts, emulator.url, *SPREAD, *proxies), timeout=90)
        assert result.returncode == 0, result.stderr
    records = assert_exactly_once(tmp / "prompts.results.jsonl", ids)
    assert live.requests == emulator.stats.requests
    assert emulator.stats.posts == len(ids)
    assert any(record["attempts"] > 1 for record in records)  # some tried the dead one first
    assert records[0]["response"] == answer_of(records[0]["id"])
