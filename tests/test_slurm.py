"""jobs/slurm/: the array and merge scripts, on their own and on a real single-node Slurm cluster.

The `slurm`-marked tests bring the cluster up once per session with `scripts/slurm-local up`
(which apt-get installs slurmctld, slurmd, slurm-client and munge when missing) and down at the
end; they are skipped with the reason when that cannot work here (not root, no apt-get, no
network for apt). Set BATCHGPT_REQUIRE_SLURM=1 to make a failed `up` an error instead (.ci/run
should).

The jobs answer prompts from the emulator, served on loopback by this test process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchgpt.emulator import EmulatorConfig, expected_answer, running_emulator
from batchgpt.providers.chatgpt_es import ChatGptEs

ROOT = Path(__file__).resolve().parent.parent
SLURM_LOCAL = ROOT / "scripts" / "slurm-local"
ARRAY = ROOT / "jobs" / "slurm" / "batchgpt-array.sbatch"
MERGE = ROOT / "jobs" / "slurm" / "merge.sbatch"
#: sys.prefix is the virtualenv this test runs in; the jobs find batchgpt in its bin/.
VENV = sys.prefix
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
SHARDS = 3
PROMPTS = 60


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without BATCHGPT_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGPT_")}
    return {**env, **extra}


def write_prompts(path: Path, count: int) -> dict[str, str]:
    """`count` prompt lines, half `prompt` and half `messages`; returns id → expected answer."""
    expected = {}
    with path.open("w", encoding="utf-8") as out:
        for number in range(count):
            record_id = f"q{number:03d}"
            if number % 2:
                messages = [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": f"Question {number}: why is the sky blue?"},
                ]
                out.write(json.dumps({"id": record_id, "messages": messages}) + "\n")
            else:
                prompt = f"Prompt {number}: name a prime above {number * 7}."
                messages = [{"role": "user", "content": prompt}]
                out.write(json.dumps({"id": record_id, "prompt": prompt}) + "\n")
            expected[record_id] = expected_answer(ChatGptEs.format_message(messages))
    return expected


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def shard_path(folder: Path, name: str, shard: int, count: int = SHARDS) -> Path:
    return folder / f"{name}.shard-{shard}-of-{count}.results.jsonl"


# -- the scripts without Slurm ----------------------------------------------------------------


def array_task(job: Path, task: int, count: int, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the array script as Slurm would run task `task` of `--array=0-(count-1)`, dry."""
    slurm = {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": str(count - 1),
    }
    slurm.update(env)
    return subprocess.run(
        ["bash", str(ARRAY), str(job)],
        env=clean_environ(BATCHGPT_VENV=VENV, BATCHGPT_DRY_RUN="1", **slurm),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("task", range(SHARDS))
def test_array_task_runs_its_own_shard_into_its_own_output(tmp: Path, task: int) -> None:
    job = tmp / "prompts.jsonl"
    write_prompts(job, 3)
    done = array_task(job, task, SHARDS, BATCHGPT_BASE_URL="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    assert resolved["shard"] == f"{task}/{SHARDS}"
    assert resolved["input"] == str(job)
    assert resolved["output"] == str(shard_path(tmp, "prompts", task))
    assert resolved["base_url"] == "http://127.0.0.1:9"


def test_array_task_takes_results_dir_proxy_dir_and_a_job_file(tmp: Path) -> None:
    write_prompts(tmp / "prompts.jsonl", 3)
    job = tmp / "nightly.toml"
    job.write_text('input = "prompts.jsonl"\noutput = "ignored.jsonl"\nrate = "2/s"\n')
    results, proxies = tmp / "results", tmp / "proxies"
    proxies.mkdir()
    (proxies / "shard-1.txt").write_text("http://user:secret@proxy-1.example.net:3128\n")
    done = array_task(job, 1, 2, BATCHGPT_RESULTS_DIR=str(results), BATCHGPT_PROXY_DIR=str(proxies))
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    assert resolved["shard"] == "1/2"
    assert resolved["input"] == str(tmp / "prompts.jsonl")
    assert resolved["output"] == str(shard_path(results, "nightly", 1, 2))
    assert resolved["rate"] == 2.0
    assert len(resolved["proxies"]) == 1
    assert "secret" not in done.stdout


def test_rerunning_some_shards_needs_the_shard_count(tmp: Path) -> None:
    job = tmp / "prompts.jsonl"
    write_prompts(job, 3)
    rerun = {"SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_MAX": "2"}
    refused = array_task(job, 2, 1, **rerun)
    assert refused.returncode == 2
    assert "BATCHGPT_SHARD_COUNT" in refused.stderr
    named = array_task(job, 2, 1, BATCHGPT_SHARD_COUNT="4", **rerun)
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout)["shard"] == "2/4"


def test_array_task_refuses_one_output_for_all_shards(tmp: Path) -> None:
    job = tmp / "prompts.jsonl"
    write_prompts(job, 3)
    done = array_task(job, 0, SHARDS, BATCHGPT_OUTPUT=str(tmp / "all.jsonl"))
    assert done.returncode == 2
    assert "BATCHGPT_OUTPUT" in done.stderr


def merge_script(job: Path, count: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(MERGE), str(job), str(count)],
        env=clean_environ(BATCHGPT_VENV=VENV),
        capture_output=True,
        text=True,
        timeout=60,
    )


def result_line(record_id: str, line: int) -> str:
    return json.dumps(
        {"id": record_id, "line": line, "status": "ok", "model": "gpt-4o", "response": "a"}
    )


def test_merge_script_joins_shards_and_refuses_overlaps_and_gaps(tmp: Path) -> None:
    job = tmp / "prompts.jsonl"
    write_prompts(job, 4)
    lines = [result_line(f"q{n:03d}", n + 1) for n in range(4)]
    first, second = shard_path(tmp, "prompts", 0, 2), shard_path(tmp, "prompts", 1, 2)

    first.write_text("\n".join(lines[:2]) + "\n")
    second.write_text("\n".join(lines[1:]) + "\n")
    overlap = merge_script(job, 2)
    assert overlap.returncode == 65
    assert "'q001'" in overlap.stderr
    assert not (tmp / "prompts.results.jsonl").exists()

    second.write_text(lines[3] + "\n")
    gap = merge_script(job, 2)
    assert gap.returncode == 65
    assert "lines 3" in gap.stderr
    assert not (tmp / "prompts.results.jsonl").exists()

    second.write_text("\n".join(lines[2:]) + "\n")
    joined = merge_script(job, 2)
    assert joined.returncode == 0, joined.stderr
    merged = read_results(tmp / "prompts.results.jsonl")
    assert [r["id"] for r in merged] == [f"q{n:03d}" for n in range(4)]


def default_array_size() -> int:
    """N of the script's own `#SBATCH --array=0-(N-1)`."""
    (last,) = re.findall(r"^#SBATCH --array=0-(\d+)$", ARRAY.read_text(), re.MULTILINE)
    return int(last) + 1


def test_every_task_of_the_default_array_gets_a_share_of_the_ids(tmp: Path) -> None:
    count = default_array_size()
    expected = write_prompts(tmp / "prompts.jsonl", PROMPTS)
    with running_emulator() as (_, url):
        for task in range(count):
            slurm = {
                "SLURM_ARRAY_TASK_ID": str(task),
                "SLURM_ARRAY_TASK_COUNT": str(count),
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_MAX": str(count - 1),
            }
            done = subprocess.run(
                ["bash", str(ARRAY), str(tmp / "prompts.jsonl")],
                env=clean_environ(BATCHGPT_VENV=VENV, BATCHGPT_BASE_URL=url, **slurm),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
    merged = merge_script(tmp / "prompts.jsonl", count)
    assert merged.returncode == 0, merged.stderr
    assert {r["id"] for r in read_results(tmp / "prompts.results.jsonl")} == set(expected)
    sizes = [len(read_results(shard_path(tmp, "prompts", k, count))) for k in range(count)]
    assert min(sizes) >= PROMPTS // count // 3, f"unbalanced shards: {sizes}"


# -- a real cluster -----------------------------------------------------------------------------


@dataclass
class Slurm:
    """The local cluster: `env` holds SLURM_CONF for the clients (sbatch, squeue, ...)."""

    env: dict[str, str]

    def run(self, *args: str, **extra: str) -> str:
        done = subprocess.run(
            args, env={**self.env, **extra}, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def submit(self, *args: str, cwd: Path, **env: str) -> str:
        """`sbatch --parsable ARGS` from `cwd`; returns the job id."""
        extra = {"BATCHGPT_VENV": VENV, **env}
        done = subprocess.run(
            ["sbatch", "--parsable", *args],
            env={**self.env, **extra},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job` of `job_id` (every task of an array), one dict per record."""
        text = self.run("scontrol", "show", "job", "--oneliner", job_id)
        return [
            dict(field.split("=", 1) for field in line.split() if "=" in field)
            for line in text.splitlines()
        ]

    def wait(self, job_id: str, timeout: float = 180) -> list[dict[str, str]]:
        """Wait until every task of `job_id` has finished or can never start."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.jobs(job_id)
            if all(
                r["JobState"] in FINISHED or r.get("Reason") == "DependencyNeverSatisfied"
                for r in records
            ):
                return records
            assert time.monotonic() < deadline, f"job {job_id} still running: {records}"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """A single-node cluster from scripts/slurm-local for the whole session."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs Linux and root (slurmd starts jobs as their user)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("slurm-wlm is not installed and there is no apt-get to install it")
    directory = tmp_path_factory.mktemp("slurm-local")
    env = clean_environ(SLURM_LOCAL_DIR=str(directory))
    up = subprocess.run(
        ["bash", str(SLURM_LOCAL), "up"], env=env, capture_output=True, text=True, timeout=900
    )
    if up.returncode != 0:
        reason = f"scripts/slurm-local up failed:\n{up.stderr[-3000:]}"
        if os.environ.get("BATCHGPT_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    env["SLURM_CONF"] = str(directory / "slurm.conf")
    try:
        yield Slurm(env)
    finally:
        subprocess.run(["bash", str(SLURM_LOCAL), "down"], env=env, timeout=300, check=False)


def check_merged(folder: Path, expected: dict[str, str]) -> list[int]:
    """The merged file holds every id once with the emulator's answer; returns shard sizes."""
    merged = read_results(folder / "prompts.results.jsonl")
    counts = Counter(r["id"] for r in merged)
    assert set(counts) == set(expected)
    assert max(counts.values()) == 1
    for record in merged:
        assert record["status"] == "ok", record
        assert record["response"] == expected[record["id"]]
    sizes = [len(read_results(shard_path(folder, "prompts", k))) for k in range(SHARDS)]
    assert all(sizes), f"an empty shard: {sizes}"
    assert sum(sizes) == len(expected)
    return sizes


@pytest.mark.slurm
@pytest.mark.timeout(900)
def test_array_and_merge_answer_every_prompt_once(slurm: Slurm, tmp: Path) -> None:
    expected = write_prompts(tmp / "prompts.jsonl", PROMPTS)
    started = time.monotonic()
    with running_emulator(EmulatorConfig(latency=0.05)) as (_, url):
        array = slurm.submit(
            f"--array=0-{SHARDS - 1}",
            str(ARRAY),
            str(tmp / "prompts.jsonl"),
            cwd=tmp,
            BATCHGPT_BASE_URL=url,
        )
        merge = slurm.submit(
            f"--dependency=afterok:{array}",
            str(MERGE),
            str(tmp / "prompts.jsonl"),
            str(SHARDS),
            cwd=tmp,
        )
        tasks = slurm.wait(array)
        (merged,) = slurm.wait(merge)
    elapsed = time.monotonic() - started
    assert [t["JobState"] for t in tasks] == ["COMPLETED"] * SHARDS, tasks
    assert merged["JobState"] == "COMPLETED", (tmp / f"batchgpt-merge-{merge}.log").read_text()
    sizes = check_merged(tmp, expected)
    print(f"\nslurm array: {PROMPTS} prompts, {SHARDS} shards of {sizes}, {elapsed:.1f} s")

    # The merge job refuses a shard that overlaps another, naming the id; it writes nothing.
    first = shard_path(tmp, "prompts", 0).read_text().splitlines(keepends=True)
    with shard_path(tmp, "prompts", 1).open("a") as second:
        second.write(first[0])
    (tmp / "prompts.results.jsonl").unlink()
    refused = slurm.submit(str(MERGE), str(tmp / "prompts.jsonl"), str(SHARDS), cwd=tmp)
    (record,) = slurm.wait(refused)
    assert (record["JobState"], record["ExitCode"]) == ("FAILED", "65:0")
    assert json.loads(first[0])["id"] in (tmp / f"batchgpt-merge-{refused}.log").read_text()
    assert not (tmp / "prompts.results.jsonl").exists()


@pytest.mark.slurm
@pytest.mark.timeout(900)
def test_a_cancelled_task_resubmitted_resumes_and_merges_once(slurm: Slurm, tmp: Path) -> None:
    """scancel one task mid-run: batchgpt drains and exits 143; `sbatch --array=K` resumes it."""
    expected = write_prompts(tmp / "prompts.jsonl", PROMPTS)
    victim = 1
    partial_path = shard_path(tmp, "prompts", victim)
    started = time.monotonic()
    with running_emulator(EmulatorConfig(latency=0.5)) as (emulator, url):
        settings = {"BATCHGPT_BASE_URL": url, "BATCHGPT_CONCURRENCY": "2"}
        array = slurm.submit(
            f"--array=0-{SHARDS - 1}", str(ARRAY), str(tmp / "prompts.jsonl"), cwd=tmp, **settings
        )
        merge = slurm.submit(
            f"--dependency=afterok:{array}",
            str(MERGE),
            str(tmp / "prompts.jsonl"),
            str(SHARDS),
            cwd=tmp,
        )
        deadline = time.monotonic() + 120
        while not partial_path.exists() or len(partial_path.read_bytes().splitlines()) < 2:
            assert time.monotonic() < deadline, "task 1 never started answering"
            time.sleep(0.05)
        slurm.run("scancel", f"{array}_{victim}")
        (cancelled,) = slurm.wait(f"{array}_{victim}")
        partial = len(read_results(partial_path))
        assert (cancelled["JobState"], cancelled["ExitCode"]) == ("CANCELLED", "143:0")
        log = (tmp / f"batchgpt-{array}_{victim}.log").read_text()

        rerun = slurm.submit(
            f"--array={victim}",
            str(ARRAY),
            str(tmp / "prompts.jsonl"),
            cwd=tmp,
            BATCHGPT_SHARD_COUNT=str(SHARDS),
            **settings,
        )
        # The first merge waits for an array that can no longer succeed; point it at the rerun.
        slurm.run(
            "scontrol", "update", f"JobId={merge}", f"Dependency=afterany:{array},afterok:{rerun}"
        )
        tasks = slurm.wait(array)
        (rerun_task,) = slurm.wait(rerun)
        (merged,) = slurm.wait(merge)
        answers = emulator.stats.answers
    elapsed = time.monotonic() - started
    assert sorted(t["JobState"] for t in tasks) == ["CANCELLED", "COMPLETED", "COMPLETED"]
    assert rerun_task["JobState"] == "COMPLETED"
    assert merged["JobState"] == "COMPLETED", (tmp / f"batchgpt-merge-{merge}.log").read_text()
    sizes = check_merged(tmp, expected)
    assert 0 < partial < sizes[victim], (partial, sizes, log)
    # The drain finished the requests in flight, so nothing was answered twice.
    assert answers == PROMPTS
    print(
        f"\nslurm cancel: shards {sizes}, task {victim} cancelled after {partial} of "
        f"{sizes[victim]} and resumed, {answers} answers for {PROMPTS} prompts, {elapsed:.1f} s"
    )


@pytest.mark.slurm
@pytest.mark.timeout(900)
def test_the_time_limit_signal_reaches_batchgpt_which_drains(slurm: Slurm, tmp: Path) -> None:
    """--signal=B:TERM@N goes to the batch script, which is batchgpt itself (exec)."""
    write_prompts(tmp / "prompts.jsonl", PROMPTS)
    started = time.monotonic()
    with running_emulator(EmulatorConfig(latency=1.0)) as (emulator, url):
        # One request a second: 60 prompts outlast the one-minute limit; Slurm signals 55 s
        # before it, at its next periodic check.
        task = slurm.submit(
            "--array=0",
            "--time=1",
            "--signal=B:TERM@55",
            str(ARRAY),
            str(tmp / "prompts.jsonl"),
            cwd=tmp,
            BATCHGPT_BASE_URL=url,
            BATCHGPT_CONCURRENCY="1",
        )
        (record,) = slurm.wait(task, timeout=150)
        answers = emulator.stats.answers
    elapsed = time.monotonic() - started
    assert (record["JobState"], record["ExitCode"]) == ("FAILED", "143:0"), record
    log = (tmp / f"batchgpt-{task}_0.log").read_text()
    assert "SIGTERM" in log
    written = len(read_results(shard_path(tmp, "prompts", 0, 1)))
    assert 0 < written == answers < PROMPTS
    print(f"\nslurm time limit: SIGTERM after {written} of {PROMPTS} answers, {elapsed:.1f} s")
