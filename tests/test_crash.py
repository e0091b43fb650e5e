"""Issue #4, the proof: the real CLI in subprocesses against the emulator, killed, cut, locked out,
signalled, starved of disk space, and resumed, and every id still ends as exactly one line.

The emulator runs in this process, so its counters tell how much work was redone: after kill -9
only the requests in flight may be answered twice, so answered − prompts <= kills × concurrency.
"""

from __future__ import annotations

import json
import os
import pty
import random
import resource
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import (
    BOTH_CHATS,
    CLI,
    assert_exactly_once,
    batchgpt,
    cli_env,
    complete_lines,
    finish,
    message_of,
    prompt_text,
    read_results,
    run_args,
    spawn_fixture,  # noqa: F401  (the `spawn` fixture)
    wait_for,
    write_prompts,
)

from batchgpt.formats import Result, encode

CONCURRENCY = 4


def answered(emulator) -> int:
    return sum(emulator.stats.answered.values())


def settle(emulator, timeout: float = 10.0) -> None:
    """Wait until the emulator has finished the requests a killed run left in flight."""
    assert wait_for(lambda: emulator.stats.in_flight == 0, timeout), "requests still in flight"


def quiesce(emulator, quiet: float = 0.3, timeout: float = 10.0) -> None:
    """After SIGSTOP: wait until requests the stopped run had already sent have all arrived
    (nothing in flight and no new request for `quiet` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        settle(emulator, timeout)
        seen = emulator.stats.posts + emulator.stats.gets
        time.sleep(quiet)
        if emulator.stats.in_flight == 0 and emulator.stats.posts + emulator.stats.gets == seen:
            return
    raise AssertionError("the stopped run's requests kept arriving")


def assert_clean_prefix(path: Path) -> bytes:
    """Everything up to the last line end parses as result lines; returns those bytes."""
    data = path.read_bytes() if path.exists() else b""
    complete = data[: data.rfind(b"\n") + 1]
    for raw in complete.splitlines():
        record = json.loads(raw)
        assert record["status"] in ("ok", "error"), record
    return complete


def snapshot(folder: Path, *, lock: bool = True) -> dict[str, bytes]:
    """Every file's bytes (the lock file's, naming the last holder, only with `lock`)."""
    return {
        path.name: path.read_bytes()
        for path in sorted(folder.iterdir())
        if lock or path.suffix != ".lock"
    }


# kill -9 ----------------------------------------------------------------------------------------

PROMPTS = 300
KILLS = 8


@BOTH_CHATS
@pytest.mark.emulator_config(latency=0.1)
def test_kill_9_at_random_moments_then_resume_answers_every_id_once(
    emulator, tmp: Path, spawn
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, PROMPTS)
    args = run_args(prompts, emulator.url, "--concurrency", str(CONCURRENCY))
    rng = random.Random(20241125)
    kills = 0
    lost = 0  # answered by the emulator but not in the output
    kept = b""
    for round_ in range(KILLS):
        posts = emulator.stats.posts
        process = spawn(args)
        if round_ % 4 == 3:  # now and then during start-up, recovery or the first requests
            time.sleep(rng.uniform(0.05, 1.0))
        else:  # mostly while prompts are flowing
            assert wait_for(lambda: emulator.stats.posts > posts, 20, 0.005)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.8))
        if process.poll() is not None:
            break  # finished before its kill
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        kills += 1
        settle(emulator)

        complete = assert_clean_prefix(output)
        assert complete.startswith(kept), "a complete line written earlier was changed"
        kept = complete
        written = len(complete.splitlines())
        assert written == len({json.loads(raw)["id"] for raw in complete.splitlines()})
        redone_here = answered(emulator) - written - lost
        assert 0 <= redone_here <= CONCURRENCY, (
            f"kill {kills}: {redone_here} answers lost, more than the {CONCURRENCY} in flight"
        )
        lost += redone_here

    assert kills >= KILLS - 1, "the job finished too early to be killed enough"
    assert complete_lines(output) < PROMPTS
    code, _, err = finish(spawn(args))
    assert code == 0, err
    assert_exactly_once(output, ids)
    assert set(emulator.stats.answered) == {message_of(prompt_text(i)) for i in ids}
    extra = answered(emulator) - PROMPTS
    assert extra == lost <= kills * CONCURRENCY


@BOTH_CHATS
@pytest.mark.emulator_config(seed=3)
def test_a_cut_output_with_garbage_is_cut_back_and_completed_once(emulator, tmp: Path) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 40)
    args = run_args(prompts, emulator.url)
    assert batchgpt(args).returncode == 0
    rng = random.Random(7)
    tails = [b"\x00" * 512, b"garbage without a line end", b'{"id": "q1", "li\n\x00\x00\x00']
    for tail in tails:
        data = output.read_bytes()
        offset = rng.randrange(len(data) // 3, len(data))
        kept_lines = data[:offset].count(b"\n")
        with output.open("r+b") as stream:
            stream.truncate(offset)
            stream.seek(offset)
            stream.write(tail)
        before = answered(emulator)

        result = batchgpt(args)

        assert result.returncode == 0, result.stderr
        assert "cut a torn tail" in result.stderr
        assert_exactly_once(output, ids)
        assert output.read_bytes().startswith(data[: data[:offset].rfind(b"\n") + 1])
        assert answered(emulator) - before == len(ids) - kept_lines  # exactly the cut lines redone


def test_middle_corruption_stops_the_run_until_repair(emulator, tmp: Path) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 20)
    args = run_args(prompts, emulator.url)
    assert batchgpt(args).returncode == 0
    lines = output.read_bytes().splitlines(keepends=True)
    offset = sum(map(len, lines[:7]))
    lines[7] = b"\x00" * (len(lines[7]) - 1) + b"\n"  # a block of zeros inside the file
    output.write_bytes(b"".join(lines))
    before, posts = snapshot(tmp, lock=False), emulator.stats.posts

    stopped = batchgpt(args)
    assert stopped.returncode == 2, stopped.stderr
    assert f"line 8, byte offset {offset}" in stopped.stderr
    assert "--repair" in stopped.stderr
    assert snapshot(tmp, lock=False) == before
    assert emulator.stats.posts == posts

    repaired = batchgpt([*args, "--repair"])
    assert repaired.returncode == 0, repaired.stderr
    assert_exactly_once(output, ids)
    assert emulator.stats.posts == posts + 1  # only the dropped line was redone


# the lock ---------------------------------------------------------------------------------------


@BOTH_CHATS
@pytest.mark.emulator_config(latency=0.1)
def test_a_second_run_exits_75_at_once_and_touches_nothing(emulator, tmp: Path, spawn) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 60)
    args = run_args(prompts, emulator.url, "--concurrency", str(CONCURRENCY))
    holder = spawn(args)
    try:
        assert wait_for(lambda: complete_lines(output) >= 4, 20)
        os.kill(holder.pid, signal.SIGSTOP)  # freeze the holder so any change would be the loser's
        quiesce(emulator)
        before, posts = snapshot(tmp), emulator.stats.posts

        # At once: the holder is stopped, so a run that waited for the lock would never end
        # and `batchgpt` would raise at its timeout.
        second = batchgpt(args, timeout=20)

        assert second.returncode == 75, second.stderr
        assert f"pid {holder.pid}" in second.stderr
        assert snapshot(tmp) == before
        assert emulator.stats.posts == posts

        status = batchgpt([*CLI, "status", str(prompts)])
        assert status.returncode == 0, status.stderr
        assert f"running:   pid {holder.pid}" in status.stdout
        assert snapshot(tmp) == before  # status is read-only too
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    code, _, err = finish(holder)
    assert code == 0, err
    assert_exactly_once(output, ids)
    assert "running:   no" in batchgpt([*CLI, "status", str(output)]).stdout


@pytest.mark.emulator_config(latency=0.1)
def test_the_lock_holds_whatever_path_names_the_output(emulator, tmp: Path, spawn) -> None:
    real, other = tmp / "d", tmp / "e"
    real.mkdir()
    other.mkdir()
    prompts, output = real / "prompts.jsonl", real / "out.jsonl"
    ids = write_prompts(prompts, 60)
    (other / "link.jsonl").symlink_to(output)
    (other / "dlink").symlink_to(real, target_is_directory=True)
    common = ("--concurrency", str(CONCURRENCY))
    holder = spawn(run_args(prompts, emulator.url, "-o", str(output), *common))
    names = {
        "a symlink to the output": (str(other / "link.jsonl"), None),
        "a relative path": ("../d/out.jsonl", other),
        "a symlinked folder": (str(other / "dlink" / "out.jsonl"), None),
        "--restart --yes through a symlink": (str(other / "link.jsonl"), None),
    }
    try:
        assert wait_for(lambda: complete_lines(output) >= 4, 20)
        os.kill(holder.pid, signal.SIGSTOP)
        quiesce(emulator)
        before, listed, posts = snapshot(real), sorted(os.listdir(other)), emulator.stats.posts
        for how, (name, cwd) in names.items():
            extra = ("--restart", "--yes") if how.startswith("--restart") else ()
            second = batchgpt(
                run_args(prompts, emulator.url, "-o", name, *common, *extra), cwd=cwd, timeout=20
            )
            assert second.returncode == 75, (how, second.stderr)
            assert f"pid {holder.pid}" in second.stderr, how
            assert snapshot(real) == before, how
            assert sorted(os.listdir(other)) == listed, how
            assert emulator.stats.posts == posts, how
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    code, _, err = finish(holder)
    assert code == 0, err
    assert_exactly_once(output, ids)

    posts, data = emulator.stats.posts, output.read_bytes()
    again = batchgpt(run_args(prompts, emulator.url, "-o", str(other / "link.jsonl"), *common))
    assert again.returncode == 0, again.stderr  # the real output's checkpoint: nothing to do
    assert emulator.stats.posts == posts
    assert output.read_bytes() == data
    assert sorted(os.listdir(other)) == ["dlink", "link.jsonl"]
    status = batchgpt([*CLI, "status", str(other / "link.jsonl"), "--json"])
    assert json.loads(status.stdout)["done"] == len(ids), status.stderr


@pytest.mark.emulator_config(latency=0.15)  # ~3 s of work: the runs overlap even under load
def test_two_runs_started_together_one_proceeds_the_other_exits_75(
    emulator, tmp: Path, spawn
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 80)
    args = run_args(prompts, emulator.url, "--concurrency", str(CONCURRENCY))
    first, second = spawn(args), spawn(args)
    outcomes = {process.pid: finish(process) for process in (first, second)}
    codes = sorted(code for code, _, _ in outcomes.values())
    assert codes == [0, 75], outcomes
    winner = next(pid for pid, (code, _, _) in outcomes.items() if code == 0)
    loser_err = next(err for code, _, err in outcomes.values() if code == 75)
    assert "holds" in loser_err
    assert f"pid {winner}" in loser_err
    assert_exactly_once(output, ids)
    assert answered(emulator) == len(ids)


# signals ----------------------------------------------------------------------------------------


@BOTH_CHATS
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.emulator_config(latency=0.3)
def test_a_signal_drains_exits_and_resumes(emulator, tmp: Path, sig: int, code: int, spawn) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 60)
    args = run_args(
        prompts, emulator.url, "--concurrency", str(CONCURRENCY), "--drain-timeout", "3"
    )
    process = spawn(args)
    assert wait_for(lambda: complete_lines(output) >= CONCURRENCY, 20)
    os.kill(process.pid, sig)
    exit_code, _, err = finish(process, timeout=20)
    assert exit_code == code, err
    assert f"{signal.Signals(sig).name}: stopped dispatching; waiting up to 3 s" in err
    assert "the drain deadline passed" not in err  # what was in flight finished within it
    assert_clean_prefix(output)
    assert output.read_bytes().endswith(b"\n")
    settle(emulator)
    assert answered(emulator) == complete_lines(output)  # the drain wrote what was in flight
    assert complete_lines(output) < len(ids)

    emulator.configure(latency=0.0)
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)
    assert answered(emulator) == len(ids)


def sigterm_mid_run(
    emulator, tmp: Path, spawn, *, drain_timeout: str
) -> tuple[subprocess.Popen[str], list[str], Path, list[str]]:
    """Run 20 prompts, SIGTERM the run once CONCURRENCY requests are in flight; the process,
    its command line, output and ids."""
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 20)
    args = run_args(
        prompts, emulator.url, "--concurrency", str(CONCURRENCY), "--drain-timeout", drain_timeout
    )
    process = spawn(args)
    assert wait_for(lambda: emulator.stats.in_flight >= CONCURRENCY, 20)
    os.kill(process.pid, signal.SIGTERM)
    return process, args, output, ids


@pytest.mark.emulator_config(latency=3.0)
def test_a_second_signal_exits_at_once_and_the_job_still_resumes(
    emulator, tmp: Path, spawn
) -> None:
    process, args, output, ids = sigterm_mid_run(emulator, tmp, spawn, drain_timeout="20")
    time.sleep(0.5)
    assert process.poll() is None  # draining: the requests in flight take 3 s
    os.kill(process.pid, signal.SIGTERM)
    exit_code, _, err = finish(process, timeout=20)
    assert exit_code == 143, err
    assert "second SIGTERM" in err
    assert complete_lines(output) == 0  # it did not wait for the requests in flight (3 s)
    assert_clean_prefix(output)

    emulator.configure(latency=0.0)
    settle(emulator)
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


@BOTH_CHATS
@pytest.mark.emulator_config(latency=3.0)
def test_the_drain_deadline_cuts_requests_that_take_too_long(emulator, tmp: Path, spawn) -> None:
    process, args, output, ids = sigterm_mid_run(emulator, tmp, spawn, drain_timeout="0.5")
    exit_code, _, err = finish(process, timeout=20)
    assert exit_code == 143, err
    assert "waiting up to 0.5 s" in err
    assert "the drain deadline passed" in err  # cut at the deadline, not when they answered
    assert complete_lines(output) == 0
    assert read_results(output) == []

    emulator.configure(latency=0.0)
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)
    settle(emulator)
    assert answered(emulator) - len(ids) <= CONCURRENCY  # only the cut requests were repeated


@pytest.mark.emulator_config(latency=3.0)
def test_drain_timeout_0_stops_at_once_cutting_requests_in_flight(
    emulator, tmp: Path, spawn
) -> None:
    process, args, output, ids = sigterm_mid_run(emulator, tmp, spawn, drain_timeout="0")
    exit_code, _, err = finish(process, timeout=20)
    assert exit_code == 143, err
    assert "waiting up to 0 s" in err
    assert "the drain deadline passed" in err
    assert complete_lines(output) == 0  # no drain: the 3 s requests in flight were cut

    emulator.configure(latency=0.0)
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)
    settle(emulator)
    assert answered(emulator) - len(ids) <= CONCURRENCY  # only the cut requests were repeated


@pytest.mark.emulator_config(down=True)
def test_a_signal_while_the_site_is_down_still_stops_in_time(emulator, tmp: Path, spawn) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 60)
    args = run_args(
        prompts, emulator.url, "--concurrency", str(CONCURRENCY), "--drain-timeout", "1"
    )
    process = spawn(args)
    assert wait_for(lambda: emulator.stats.gets >= 5, 20)  # failing and backing off
    os.kill(process.pid, signal.SIGTERM)
    exit_code, _, err = finish(process, timeout=20)
    assert exit_code == 143, err
    # Stopped by the drain deadline, not by the breaker giving up (300 s) or retries running out.
    assert "the drain deadline passed" in err
    assert "unreachable" not in err
    assert read_results(output) == []  # nothing recorded as an error: the prompts wait

    emulator.configure(down=False)
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


def being_read(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open read-only and part-way through (from /proc)."""
    size = path.stat().st_size
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != str(path):
                continue
            info = dict(
                line.split(":\t", 1)
                for line in Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().splitlines()
                if ":\t" in line
            )
        except OSError:  # closed meanwhile
            continue
        if int(info["flags"], 8) & os.O_ACCMODE == os.O_RDONLY and 0 < int(info["pos"]) < size:
            return True
    return False


def process_state(pid: int) -> str:
    """R (running), S (asleep, e.g. waiting to read) … from /proc/PID/stat."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def signal_while(process, condition, sig: int) -> None:
    """Send `sig` to `process` as soon as `condition()` holds (polled without pause)."""
    assert wait_for(condition, 60, interval=0.0005), "the moment to signal never came"
    os.kill(process.pid, sig)


BLANK_LINES = 2_000_000  # 200 MB of whitespace lines: long to read, nothing to send


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_scan_of_a_large_input_stops_it_touching_nothing(
    emulator, tmp: Path, sig: int, code: int, spawn
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 20)
    with prompts.open("ab") as stream:
        block = (b" " * 99 + b"\n") * 10_000
        for _ in range(BLANK_LINES // 10_000):
            stream.write(block)
    args = run_args(prompts, emulator.url)
    checkpoint = Path(f"{output}.ckpt")
    process = spawn(args)

    signal_while(
        process,
        lambda: being_read(process.pid, prompts) and not checkpoint.exists(),
        sig,
    )
    exit_code, _, err = finish(process)

    assert exit_code == code, err
    assert "Traceback" not in err
    assert "output: not read" in err
    assert not output.exists() and not checkpoint.exists(), "stopped only after the scan"
    assert emulator.stats.posts == 0
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


def test_a_signal_during_output_recovery_stops_it_touching_nothing(
    emulator, tmp: Path, spawn
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 200_020)
    done = ids[:-20]
    with output.open("wb") as stream:
        for line, record_id in enumerate(done, start=1):
            result = Result(record_id, line, "gpt-4o", response=f"answer {line}", attempts=1)
            stream.write(encode(result, "native"))
    data = output.read_bytes()
    args = run_args(prompts, emulator.url)
    checkpoint = Path(f"{output}.ckpt")
    process = spawn(args)

    signal_while(process, lambda: being_read(process.pid, output), signal.SIGTERM)
    exit_code, _, err = finish(process)

    assert exit_code == 143, err
    assert "Traceback" not in err
    assert "output: not read, the run stopped before it was recovered" in err
    assert output.read_bytes() == data
    assert not checkpoint.exists(), "stopped only after recovery"
    assert emulator.stats.posts == 0
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids, all_ok=False)
    assert emulator.stats.posts == 20


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_the_run_begins_exits_130_or_143(
    emulator, tmp: Path, sig: int, code: int
) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 5)
    args = run_args(prompts, emulator.url)
    assert batchgpt(args).returncode == 0
    before = snapshot(tmp)
    terminal, other_end = pty.openpty()  # --restart asks on a terminal: the run waits there
    process = subprocess.Popen(
        [*args, "--restart"],
        stdin=other_end,
        stdout=other_end,
        stderr=subprocess.PIPE,
        env=cli_env(),
        text=True,
    )
    os.close(other_end)
    try:
        asked = b""
        deadline = time.monotonic() + 30
        while b"start over?" not in asked and time.monotonic() < deadline:
            if select.select([process.stderr], [], [], 1)[0]:
                if not (chunk := os.read(process.stderr.fileno(), 1024)):
                    break  # it ended without asking
                asked += chunk
        assert b"start over?" in asked, asked
        # A signal between the prompt and the read would only be seen after a key is pressed.
        assert wait_for(lambda: process_state(process.pid) == "S", 30), "it never waited"
        os.kill(process.pid, sig)
        exit_code, _, err = finish(process)
    finally:
        os.close(terminal)

    assert exit_code == code, err
    assert f"stopped by {signal.Signals(sig).name}" in err
    assert "Traceback" not in err
    assert snapshot(tmp) == before
    assert emulator.stats.posts == 5


# disk full --------------------------------------------------------------------------------------

FILE_SIZE_LIMIT = 8_000


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_a_full_disk_exits_74_and_a_clean_resume_completes(emulator, tmp: Path) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 120)
    args = run_args(prompts, emulator.url)

    full = batchgpt(args, preexec_fn=limit_file_size)

    assert full.returncode == 74, full.stderr
    assert str(output) in full.stderr
    assert "file too large" in full.stderr
    assert "resumable" in full.stderr
    assert "Traceback" not in full.stderr
    assert output.stat().st_size <= FILE_SIZE_LIMIT
    assert 0 < complete_lines(output) < len(ids)

    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


# changed input and --restart --------------------------------------------------------------------


@pytest.mark.emulator_config(latency=0.1)
def test_a_changed_input_is_refused_until_restart(emulator, tmp: Path, spawn) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    write_prompts(prompts, 40)
    args = run_args(prompts, emulator.url, "--concurrency", str(CONCURRENCY))
    partial = spawn(args)
    assert wait_for(lambda: complete_lines(output) >= 3, 20)
    os.kill(partial.pid, signal.SIGKILL)
    partial.wait(10)
    settle(emulator)
    ids = write_prompts(prompts, 41, extra=" (edited)")  # every line edited, and one more
    before = snapshot(tmp, lock=False)

    changed = batchgpt(args)
    assert changed.returncode == 2, changed.stderr
    assert str(prompts) in changed.stderr
    assert "changed since the checkpoint: its first" in changed.stderr
    assert "not only appended to" in changed.stderr
    assert "--restart" in changed.stderr
    assert snapshot(tmp, lock=False) == before

    unconfirmed = batchgpt([*args, "--restart"])
    assert unconfirmed.returncode == 2, unconfirmed.stderr
    assert "--yes" in unconfirmed.stderr
    assert snapshot(tmp, lock=False) == before

    emulator.configure(latency=0.0)
    restarted = batchgpt([*args, "--restart", "--yes"])
    assert restarted.returncode == 0, restarted.stderr
    assert_exactly_once(output, ids, extra=" (edited)")


def test_restart_without_yes_and_stdin_closed_exits_2_asking_for_yes(emulator, tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 5)
    args = run_args(prompts, emulator.url)
    assert batchgpt(args).returncode == 0
    before = snapshot(tmp, lock=False)

    closed = subprocess.run(  # as `batchgpt run … --restart <&-` from a scheduler
        [*args, "--restart"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(0),
    )

    assert closed.returncode == 2, closed.stderr
    assert "add --yes" in closed.stderr
    assert "Traceback" not in closed.stderr
    assert snapshot(tmp, lock=False) == before


@pytest.mark.parametrize(
    "garbage",
    [b'{"version":1,"input":5}', b"[]", b"null", b"\x00\x01 not json", b""],
    ids=["input-is-a-number", "list", "null", "binary", "empty"],
)
@pytest.mark.emulator_config(latency=0.1)
def test_an_unreadable_checkpoint_exits_2_naming_it_and_the_output_alone_resumes(
    emulator, tmp: Path, garbage: bytes, spawn
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    checkpoint = Path(f"{output}.ckpt")
    ids = write_prompts(prompts, 30)
    args = run_args(prompts, emulator.url, "--concurrency", "2")
    partial = spawn(args)
    assert wait_for(lambda: complete_lines(output) >= 3, 20)
    os.kill(partial.pid, signal.SIGKILL)
    partial.wait(10)
    settle(emulator)
    emulator.configure(latency=0.0)
    checkpoint.write_bytes(garbage)
    before, posts = snapshot(tmp, lock=False), emulator.stats.posts

    refused = batchgpt(args)

    assert refused.returncode == 2, refused.stderr
    assert f"checkpoint {checkpoint} is unreadable" in refused.stderr
    assert "delete the checkpoint" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert snapshot(tmp, lock=False) == before
    assert emulator.stats.posts == posts
    checkpoint.unlink()
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


def prompt_line(record_id: str) -> str:
    return json.dumps({"id": record_id, "prompt": prompt_text(record_id)}) + "\n"


@pytest.mark.emulator_config(latency=0.2)
def test_lines_appended_mid_run_wait_for_the_next_run_which_processes_them(
    emulator, tmp: Path, spawn
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    first = write_prompts(prompts, 20)
    args = run_args(prompts, emulator.url, "--concurrency", "2")
    process = spawn(args)
    assert wait_for(lambda: complete_lines(output) >= 2, 20)
    appended = [f"new{n}" for n in range(5)]
    half = prompt_line("half")
    with prompts.open("a") as stream:  # as `cat more.jsonl >> prompts.jsonl` would, mid-write
        stream.write("".join(map(prompt_line, appended)) + half[:25])
    assert process.poll() is None, "the run ended before the lines were appended"

    code, _, err = finish(process)

    assert code == 0, err
    assert_exactly_once(output, first)  # neither the new lines nor the half line
    assert emulator.stats.posts == len(first)

    with prompts.open("a") as stream:
        stream.write(half[25:])
    grown = batchgpt(args)
    assert grown.returncode == 0, grown.stderr
    assert "grew since the checkpoint" in grown.stderr
    assert_exactly_once(output, [*first, *appended, "half"])
    assert emulator.stats.posts == len(first) + len(appended) + 1

    with prompts.open("a") as stream:  # a finished job, and cron adds tonight's prompts
        stream.write(prompt_line("tonight"))
    again = batchgpt(args)
    assert again.returncode == 0, again.stderr
    assert_exactly_once(output, [*first, *appended, "half", "tonight"])
    assert emulator.stats.posts == len(first) + len(appended) + 2


def test_an_appended_line_reusing_an_id_answered_by_an_earlier_run_is_a_duplicate(
    emulator, tmp: Path
) -> None:
    """The ids read back from the output on resume and those read from the input meet in one
    index: a line added later with an answered id is refused and names that id's first line."""
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    first = write_prompts(prompts, 3)
    args = run_args(prompts, emulator.url)
    assert batchgpt(args).returncode == 0
    with prompts.open("a") as stream:
        stream.write(prompt_line(first[1]))

    grown = batchgpt(args)

    assert grown.returncode == 1, grown.stderr
    added = read_results(output)[-1]
    assert added["line"] == 4 and added["status"] == "error"
    assert added["error"]["kind"] == "invalid_input"
    assert f"duplicate id '{first[1]}' (first on line 2)" in added["error"]["message"]
    assert emulator.stats.posts == len(first)


def test_an_edited_byte_is_refused_even_when_lines_were_appended(emulator, tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 10)
    args = run_args(prompts, emulator.url)
    assert batchgpt(args).returncode == 0
    data = prompts.read_bytes()
    edited = data.replace(b"seven", b"eight", 1)
    for changed, what in [
        (edited, "its content differs (sha256"),
        (edited + prompt_line("more").encode(), "its first"),
        (data[:-1], "it is shorter"),
    ]:
        prompts.write_bytes(changed)
        before, posts = snapshot(tmp, lock=False), emulator.stats.posts
        refused = batchgpt(args)
        assert refused.returncode == 2, refused.stderr
        assert f"{prompts} changed since the checkpoint: {what}" in refused.stderr
        assert snapshot(tmp, lock=False) == before
        assert emulator.stats.posts == posts


# --retry-errors and finished jobs ---------------------------------------------------------------


@pytest.mark.emulator_config(truncate_rate=1.0)
def test_retry_errors_turns_retryable_errors_into_answers(emulator, tmp: Path) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 12)
    with prompts.open("a") as stream:
        stream.write(json.dumps({"id": "gate", "prompt": "please [captcha]"}) + "\n")
    args = run_args(prompts, emulator.url, "--retries", "0", "--give-up-after", "1000")

    failing = batchgpt(args)
    assert failing.returncode == 1, failing.stderr
    records = read_results(output)
    assert len(records) == 13
    assert {(r["status"], r["error"]["kind"], r["error"]["retryable"]) for r in records} == {
        ("error", "bad_response", True)
    }

    emulator.configure(truncate_rate=0.0)
    posts = emulator.stats.posts
    again = batchgpt(args)  # finished: nothing is sent, the recorded outcome is the exit code
    assert again.returncode == 1, again.stderr
    assert emulator.stats.posts == posts

    retried = batchgpt([*args, "--retry-errors"])
    assert retried.returncode == 1, retried.stderr  # the captcha is a final error
    records = read_results(output)
    assert sorted(r["id"] for r in records) == sorted([*ids, "gate"])
    by_id = {r["id"]: r for r in records}
    assert all(by_id[i]["status"] == "ok" for i in ids)
    assert by_id["gate"]["error"]["kind"] == "captcha"
    assert emulator.stats.posts - posts == 13

    posts = emulator.stats.posts
    final = batchgpt([*args, "--retry-errors"])  # a final error is not retried
    assert final.returncode == 1, final.stderr
    assert emulator.stats.posts == posts
    assert read_results(output) == records


def test_a_finished_job_sends_nothing_and_exits_0(emulator, tmp: Path) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 10)
    args = run_args(prompts, emulator.url)
    assert batchgpt(args).returncode == 0
    data, posts, gets = output.read_bytes(), emulator.stats.posts, emulator.stats.gets
    again = batchgpt(args)
    assert again.returncode == 0, again.stderr
    assert (emulator.stats.posts, emulator.stats.gets) == (posts, gets)
    assert output.read_bytes() == data
    assert_exactly_once(output, ids)
