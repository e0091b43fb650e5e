"""checkpoint.py on real files: recovery from every cut, corruption reports, the job lock across
processes, atomic checkpoint replacement and the fingerprint check.

Recovery is tested the SQLite way: a small output is cut at every byte offset (and with garbage or
NUL bytes appended) and must come back as exactly its longest prefix of complete, valid lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CLI, batchgpt, run_args, write_prompts

from batchgpt.checkpoint import (
    Checkpoint,
    JobLock,
    ResultLog,
    file_fingerprint,
    lock_holder,
    recover_output,
    replace_atomically,
    scan_input,
)
from batchgpt.errors import CorruptOutputError, InputChangedError, JobLockedError
from batchgpt.formats import ErrorInfo, Result, encode


def result_line(line: int, *, error: str | None = None, retryable: bool = False) -> bytes:
    if error is None:
        result = Result(f"id{line}", line, "gpt-4o", response=f"answer «{line}»", attempts=1)
    else:
        result = Result(
            f"id{line}", line, "gpt-4o", error=ErrorInfo(error, "failed", 500, retryable)
        )
    return encode(result, "native")


LINES = [
    result_line(1),
    result_line(2, error="server_error", retryable=True),
    result_line(3),
    result_line(4, error="captcha"),
    result_line(5),
]
DATA = b"".join(LINES)
#: The end offset of each complete line of DATA.
ENDS = [sum(len(line) for line in LINES[: n + 1]) for n in range(len(LINES))]


def longest_valid_prefix(data: bytes) -> bytes:
    """The oracle: the longest prefix of `data` made of complete result lines, one per line."""
    kept, seen = 0, set()
    while (end := data.find(b"\n", kept)) != -1:
        try:
            record = json.loads(data[kept : end + 1])
        except ValueError:
            break
        if not isinstance(record, dict) or "status" not in record or record["line"] in seen:
            break
        seen.add(record["line"])
        kept = end + 1
    return data[:kept]


def lines_in(prefix: bytes) -> set[int]:
    return {json.loads(raw)["line"] for raw in prefix.splitlines()}


def assert_recovers(path: Path, offset: int, tail: bytes) -> None:
    written = DATA[:offset] + tail
    path.write_bytes(written)
    recovered = recover_output(path)
    expected = longest_valid_prefix(written)
    assert len(expected) >= max([0, *[end for end in ENDS if end <= offset]])
    assert path.read_bytes() == expected, (offset, tail)
    assert {n for n in range(1, 7) if n in recovered.done} == lines_in(expected)
    assert recovered.size == len(expected)
    assert recovered.cut_bytes == len(written) - len(expected)


# recovery -------------------------------------------------------------------------------------


def test_a_cut_at_every_byte_offset_leaves_the_complete_lines(tmp: Path) -> None:
    path = tmp / "out.jsonl"
    for offset in range(len(DATA) + 1):
        assert_recovers(path, offset, b"")


@pytest.mark.parametrize(
    "tail",
    [b"\x00" * 17, b"\x00" * 4096, b"garbage", b"garbage\n", b"\n", b"\x00\n\x00", b'{"line": 9'],
    ids=["nul17", "nul4096", "text", "text-line", "blank-line", "nul-lines", "json-start"],
)
def test_a_cut_with_garbage_appended_is_cut_back(tmp: Path, tail: bytes) -> None:
    path = tmp / "out.jsonl"
    for offset in range(len(DATA) + 1):
        assert_recovers(path, offset, tail)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    offset=st.integers(0, len(DATA)),
    tail=st.binary(max_size=200).filter(lambda b: b"status" not in b),
)
def test_any_cut_and_any_tail_recover_to_the_prefix(tmp: Path, offset: int, tail: bytes) -> None:
    assert_recovers(tmp / "out.jsonl", offset, tail)


def test_recovery_twice_changes_nothing_more(tmp: Path) -> None:
    path = tmp / "out.jsonl"
    path.write_bytes(DATA[: ENDS[2] + 7])
    recover_output(path)
    again = recover_output(path)
    assert path.read_bytes() == DATA[: ENDS[2]]
    assert again.cut_bytes == 0
    assert again.ok == 2
    assert dict(again.errors) == {"server_error": 1}


def test_a_missing_output_is_an_empty_done_set(tmp: Path) -> None:
    recovered = recover_output(tmp / "absent.jsonl")
    assert recovered.done.count == 0
    assert not (tmp / "absent.jsonl").exists()


def test_read_only_recovery_touches_nothing(tmp: Path) -> None:
    path = tmp / "out.jsonl"
    path.write_bytes(DATA[: ENDS[1] + 5])
    recovered = recover_output(path, read_only=True)
    assert path.read_bytes() == DATA[: ENDS[1] + 5]
    assert recovered.done.count == 2


# corruption in the middle ---------------------------------------------------------------------


def corrupt_middle(path: Path, replacement: bytes) -> int:
    """Replace line 3 with `replacement`; returns line 3's byte offset."""
    path.write_bytes(LINES[0] + LINES[1] + replacement + LINES[3] + LINES[4])
    return ENDS[1]


@pytest.mark.parametrize(
    "replacement",
    [b"not json at all\n", b"\x00\x00\x00\n", b'{"line": 3, "status": "ok"\n', b"[1, 2]\n", b"\n"],
    ids=["text", "nul", "half-json", "array", "blank"],
)
def test_middle_corruption_is_reported_and_nothing_is_touched(
    tmp: Path, replacement: bytes
) -> None:
    path = tmp / "out.jsonl"
    offset = corrupt_middle(path, replacement)
    before = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    with pytest.raises(CorruptOutputError) as caught:
        recover_output(path)
    message = str(caught.value)
    assert "line 3" in message
    assert f"byte offset {offset}" in message
    assert "--repair" in message
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stamp


def test_middle_corruption_with_a_torn_tail_still_touches_nothing(tmp: Path) -> None:
    path = tmp / "out.jsonl"
    data = LINES[0] + b"junk\n" + LINES[2] + LINES[3][:10]
    path.write_bytes(data)
    with pytest.raises(CorruptOutputError, match="line 2, byte offset"):
        recover_output(path)
    assert path.read_bytes() == data


def test_repair_drops_the_bad_middle_line(tmp: Path) -> None:
    path = tmp / "out.jsonl"
    corrupt_middle(path, b"not json\n")
    path.write_bytes(path.read_bytes() + LINES[2][:9])
    recovered = recover_output(path, repair=True)
    assert path.read_bytes() == LINES[0] + LINES[1] + LINES[3] + LINES[4]
    assert recovered.dropped_lines == 1
    assert 3 not in recovered.done
    assert {1, 2, 4, 5} == {n for n in range(1, 6) if n in recovered.done}
    assert not list(tmp.glob(".*tmp"))


def test_a_second_result_for_one_input_line_is_corruption(tmp: Path) -> None:
    path = tmp / "out.jsonl"
    twice = result_line(2)  # input line 2 again, this time as an answer
    data = LINES[0] + LINES[1] + twice + LINES[2]
    path.write_bytes(data)
    with pytest.raises(CorruptOutputError) as caught:
        recover_output(path)
    assert "line 3" in str(caught.value)
    assert f"byte offset {ENDS[1]}" in str(caught.value)
    assert "second result for input line 2" in str(caught.value)
    assert path.read_bytes() == data
    recovered = recover_output(path, repair=True)
    assert path.read_bytes() == LINES[0] + LINES[1] + LINES[2]
    assert recovered.dropped_lines == 1
    assert dict(recovered.errors) == {"server_error": 1}


def test_retry_errors_drops_retryable_error_records_only(tmp: Path) -> None:
    path = tmp / "out.jsonl"
    path.write_bytes(DATA + LINES[0][:5])
    recovered = recover_output(path, drop=lambda record: not record.ok and record.retryable)
    assert path.read_bytes() == LINES[0] + LINES[2] + LINES[3] + LINES[4]
    assert 2 not in recovered.done
    assert recovered.dropped_lines == 1
    assert dict(recovered.errors) == {"captcha": 1}
    assert recovered.ok == 3


# the lock -------------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from batchgpt.checkpoint import JobLock
    lock = JobLock(Path(sys.argv[1]))
    lock.acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def hold_lock(path: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


def test_the_lock_is_exclusive_across_processes_and_names_the_holder(tmp: Path) -> None:
    path = tmp / "out.jsonl.lock"
    child = hold_lock(path)
    try:
        with pytest.raises(JobLockedError) as caught:
            JobLock(path).acquire()
        assert f"pid {child.pid}" in str(caught.value)
        assert caught.value.exit_code == 75
        assert lock_holder(path) is not None
        assert f"pid {child.pid}" in (lock_holder(path) or "")
        assert f"pid {child.pid}" in path.read_text()  # the loser wrote nothing
    finally:
        child.kill()
        child.wait(10)


def test_the_kernel_releases_the_lock_after_kill_9(tmp: Path) -> None:
    path = tmp / "out.jsonl.lock"
    child = hold_lock(path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert lock_holder(path) is None
    with JobLock(path):
        assert f"pid {os.getpid()}" in path.read_text()
        with pytest.raises(JobLockedError):
            JobLock(path).acquire()  # a second open file description in one process conflicts too
    assert lock_holder(path) is None


SLOW_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    if float(sys.argv[2]) < 1:
        os.write(fd, f"pid {os.getpid()} on a slow host\\n".encode())
    time.sleep(60)
    """
)


@pytest.mark.parametrize("delay", [0.2, 5.0], ids=["writes-late", "never-writes"])
def test_a_loser_waits_a_moment_for_the_holder_to_write_its_name(tmp: Path, delay: float) -> None:
    path = tmp / "out.jsonl.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_HOLDER, str(path), str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(JobLockedError) as caught:
            JobLock(path).acquire()
        if delay < 1:
            assert f"pid {child.pid} on a slow host" in str(caught.value)
        else:
            assert "another process" in str(caught.value)
        assert time.monotonic() - started < 1.5  # still "at once"
    finally:
        child.kill()
        child.wait(10)


# checkpoint -----------------------------------------------------------------------------------

REPLACER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from batchgpt.checkpoint import replace_atomically
    path = Path(sys.argv[1])
    for n in range(int(sys.argv[2])):
        replace_atomically(path, (b"A" if n % 2 else b"B") * (50_000 + n % 7))
    """
)


def test_checkpoint_replacement_is_atomic_for_readers(tmp: Path) -> None:
    path = tmp / "job.ckpt"
    replace_atomically(path, b"first")
    writer = subprocess.Popen([sys.executable, "-c", REPLACER, str(path), "300"])
    seen = set()
    deadline = time.monotonic() + 30
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            data = path.read_bytes()
            assert data == b"first" or data in {
                letter * size for letter in (b"A", b"B") for size in range(50_000, 50_007)
            }, f"a reader saw a partial checkpoint of {len(data)} bytes"
            seen.add(data[:1])
    finally:
        writer.kill()
        writer.wait(10)
    assert seen & {b"A", b"B"}
    assert [p.name for p in tmp.iterdir()] == ["job.ckpt"]  # no temp file left behind


def offset_of(checkpoint: Path) -> int:
    saved = Checkpoint.load(checkpoint)
    assert saved is not None
    return saved.output_offset


def test_a_commit_points_the_checkpoint_at_the_synced_output(tmp: Path) -> None:
    output, checkpoint = tmp / "out.jsonl", tmp / "out.jsonl.ckpt"
    header = Checkpoint("in.jsonl", {"sha256": "x", "size": 1}, {"model": "gpt-4o"})
    log = ResultLog(output, checkpoint, header)
    try:
        log.append(LINES[0] + LINES[1])
        log.commit({"ok": 1, "errors": {"server_error": 1}})
        saved = Checkpoint.load(checkpoint)
        assert saved is not None
        assert saved.output_offset == ENDS[1] == output.stat().st_size
        assert saved.counts == {"ok": 1, "errors": {"server_error": 1}}
        assert saved.options == {"model": "gpt-4o"}
        log.append(LINES[2])
        assert offset_of(checkpoint) == ENDS[1]  # until the next commit
        log.commit({"ok": 2, "errors": {"server_error": 1}})
        assert offset_of(checkpoint) == ENDS[2]
        log.append(LINES[3])  # appended while a commit for the first three lines runs
        log.commit({"ok": 2, "errors": {"server_error": 1}}, ENDS[2])
        assert offset_of(checkpoint) == ENDS[2]
    finally:
        log.close()
    assert sorted(p.name for p in tmp.iterdir()) == ["out.jsonl", "out.jsonl.ckpt"]


GOOD_CHECKPOINT = {
    "version": 1,
    "input_path": "in.jsonl",
    "input": {"sha256": "ab" * 32, "size": 10},
    "options": {},
}
WRONG_CHECKPOINTS = {
    "truncated": b'{"version": 1, "inp',
    "empty": b"",
    "binary": b"\x00\xff\xfe garbage",
    "null": b"null",
    "list": b"[]",
    "number": b"5",
    "string": b'"checkpoint"',
    "input-is-a-number": b'{"version":1,"input":5}',
    "no-version": orjson.dumps({k: v for k, v in GOOD_CHECKPOINT.items() if k != "version"}),
    "version-2": orjson.dumps({**GOOD_CHECKPOINT, "version": 2}),
    "version-true": orjson.dumps({**GOOD_CHECKPOINT, "version": True}),
    "version-text": orjson.dumps({**GOOD_CHECKPOINT, "version": "1"}),
    "no-input": orjson.dumps({k: v for k, v in GOOD_CHECKPOINT.items() if k != "input"}),
    "input-without-size": orjson.dumps({**GOOD_CHECKPOINT, "input": {"sha256": "ab"}}),
    "size-is-text": orjson.dumps({**GOOD_CHECKPOINT, "input": {"sha256": "ab", "size": "10"}}),
    "options-is-a-list": orjson.dumps({**GOOD_CHECKPOINT, "options": []}),
    "offset-is-text": orjson.dumps({**GOOD_CHECKPOINT, "output_offset": "12"}),
    "offset-is-a-bool": orjson.dumps({**GOOD_CHECKPOINT, "output_offset": True}),
    "counts-is-null": orjson.dumps({**GOOD_CHECKPOINT, "counts": None}),
}


def test_a_well_formed_checkpoint_loads(tmp: Path) -> None:
    path = tmp / "out.jsonl.ckpt"
    path.write_bytes(orjson.dumps(GOOD_CHECKPOINT))
    assert Checkpoint.load(path) == Checkpoint("in.jsonl", GOOD_CHECKPOINT["input"], {})
    assert Checkpoint.load(tmp / "missing.ckpt") is None


@pytest.mark.parametrize("data", WRONG_CHECKPOINTS.values(), ids=WRONG_CHECKPOINTS.keys())
def test_every_unreadable_checkpoint_is_refused_by_name_with_the_cheap_advice(
    tmp: Path, data: bytes
) -> None:
    path = tmp / "out.jsonl.ckpt"
    path.write_bytes(data)
    with pytest.raises(InputChangedError) as caught:
        Checkpoint.load(path)
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert f"checkpoint {path} is unreadable" in message
    assert "the output alone is enough to resume: delete the checkpoint" in message


def test_a_folder_where_the_checkpoint_should_be_is_refused_by_name(tmp: Path) -> None:
    path = tmp / "out.jsonl.ckpt"
    path.mkdir()
    with pytest.raises(InputChangedError, match=f"checkpoint {path} is unreadable"):
        Checkpoint.load(path)


@pytest.mark.parametrize("version", [0, 2, 99, "1", None])
def test_a_checkpoint_of_another_version_is_refused_naming_the_file(
    tmp: Path, version: object
) -> None:
    path = tmp / "out.jsonl.ckpt"
    state = json.loads(Checkpoint("p.jsonl", {"sha256": "0", "size": 0}, {}).dump())
    state["version"] = version
    path.write_text(json.dumps(state))
    with pytest.raises(InputChangedError) as caught:
        Checkpoint.load(path)
    message = caught.value.message
    assert str(path) in message
    assert f"version {version!r}" in message
    assert "delete the checkpoint" in message
    assert caught.value.exit_code == 2


def test_run_and_status_refuse_a_checkpoint_of_another_version_touching_nothing(
    tmp: Path,
) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 3)
    output = tmp / "prompts.results.jsonl"
    output.write_bytes(result_line(1))
    checkpoint = tmp / "prompts.results.jsonl.ckpt"
    state = json.loads(Checkpoint(str(prompts), file_fingerprint(prompts), {}).dump())
    checkpoint.write_text(json.dumps({**state, "version": 2}))
    before = {p.name: p.read_bytes() for p in tmp.iterdir()}

    for args in (run_args(prompts, "http://127.0.0.1:9"), [*CLI, "status", str(prompts)]):
        refused = batchgpt(args)
        assert refused.returncode == 2, refused.stderr
        assert f"checkpoint {checkpoint} is unreadable (version 2" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert {p.name: p.read_bytes() for p in tmp.iterdir() if p.suffix != ".lock"} == before


# fingerprint ----------------------------------------------------------------------------------


def resume_check(saved: Checkpoint, prompts: Path, options: dict) -> bool:
    """What a resume decides: scan the input against the checkpoint and check it."""
    return saved.check(scan_input(prompts, prefix=saved.input["size"]), options, prompts)


OPTIONS = {"model": "gpt-4o", "shard": None}


def test_an_unchanged_input_resumes(tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    prompts.write_bytes(b'{"prompt": "one"}\n')
    saved = Checkpoint(str(prompts), file_fingerprint(prompts), OPTIONS)
    assert resume_check(saved, prompts, OPTIONS) is False


@pytest.mark.parametrize("first", [b"", b'{"prompt": "one"}\n', b'{"prompt": "one"}\n' * 70_000])
def test_an_input_that_only_grew_resumes(tmp: Path, first: bytes) -> None:
    prompts = tmp / "prompts.jsonl"
    prompts.write_bytes(first)
    saved = Checkpoint(str(prompts), file_fingerprint(prompts), OPTIONS)
    with prompts.open("ab") as stream:
        stream.write(b'{"prompt": "two"}\n{"prompt": "three"}\n')
    assert resume_check(saved, prompts, OPTIONS) is True


@pytest.mark.parametrize(
    ("after", "what"),
    [
        (b'{"prompt": "One"}\n', "its content differs (sha256"),
        (b'{"prompt": "on"}\n', "it is shorter (size 18 → 17)"),
        (b'{"prompt": "One"}\n{"prompt": "two"}\n', "its first 18 bytes differ"),
    ],
    ids=["edited", "shorter", "edited-and-grew"],
)
def test_any_other_change_is_refused_saying_what_changed(
    tmp: Path, after: bytes, what: str
) -> None:
    prompts = tmp / "prompts.jsonl"
    prompts.write_bytes(b'{"prompt": "one"}\n')
    saved = Checkpoint(str(prompts), file_fingerprint(prompts), OPTIONS)
    prompts.write_bytes(after)
    with pytest.raises(InputChangedError) as caught:
        resume_check(saved, prompts, OPTIONS)
    message = str(caught.value)
    assert str(prompts) in message
    assert what in message
    assert "--restart" in message


def test_a_last_line_without_a_line_end_that_was_extended_is_refused(tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    prompts.write_bytes(b'{"prompt": "one"}\n{"prompt": "tw')
    saved = Checkpoint(str(prompts), file_fingerprint(prompts), OPTIONS)
    with prompts.open("ab") as stream:
        stream.write(b'o"}\n')
    with pytest.raises(InputChangedError, match="its last line was extended"):
        resume_check(saved, prompts, OPTIONS)


def test_the_scan_reads_the_prefix_and_the_whole_file_at_once(tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    data = b"".join(b'{"prompt": "%d"}\n' % n for n in range(200_000))
    prompts.write_bytes(data)
    import hashlib

    for prefix in (0, 1, 17, 1 << 20, (1 << 20) + 5, len(data) - 1, len(data)):
        scan = scan_input(prompts, prefix=prefix)
        assert scan.fingerprint == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        assert scan.lines == 200_000
        assert scan.prefix == {"sha256": hashlib.sha256(data[:prefix]).hexdigest(), "size": prefix}
        assert scan.prefix_ends_a_line == (prefix == 0 or data[prefix - 1 : prefix] == b"\n")
    assert scan_input(prompts, prefix=len(data) + 1).prefix is None


def test_changed_result_options_are_named(tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    prompts.write_bytes(b'{"prompt": "one"}\n')
    saved = Checkpoint(str(prompts), file_fingerprint(prompts), {"model": "gpt-4o", "shard": "1/3"})
    with pytest.raises(InputChangedError) as caught:
        resume_check(saved, prompts, {"model": "gpt-4o", "shard": "1/4"})
    assert "shard '1/3' → '1/4'" in str(caught.value)
    assert "model" not in str(caught.value)
    assert "--restart" in str(caught.value)


def test_the_fingerprint_is_the_sha256_and_size(tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    prompts.write_bytes(b"x" * 3_000_000)
    import hashlib

    assert file_fingerprint(prompts) == {
        "sha256": hashlib.sha256(b"x" * 3_000_000).hexdigest(),
        "size": 3_000_000,
    }
    assert orjson.loads(orjson.dumps(file_fingerprint(prompts))) == file_fingerprint(prompts)
