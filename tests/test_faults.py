"""Every I/O failure of a run is one line naming the file and exit 74, or exit 2 where the user
must fix a path; never a traceback, never exit 1; and a run after the fault is fixed completes
with every id once.

Faults are injected for real, into the real CLI in a subprocess:
- **A full disk**: a small tmpfs mounted for the test (`tiny_fs`) and filled up, so writes fail
  with ENOSPC as on any full disk. Needs root (CAP_SYS_ADMIN), as these tests run.
- **EIO and chosen errnos** on one file: an LD_PRELOAD shim, `tests/fault_shim.c`, compiled here
  with gcc, makes `write`, `fsync` or `ftruncate` fail on the file whose path ends as asked. A
  healthy disk never gives EIO on demand, and dm-error needs a block device per test; the shim
  reaches exactly one call on one file, and libc does the rest unchanged.
- **A file-size limit** (RLIMIT_FSIZE, EFBIG): tests/test_crash.py.
- **Permissions**: tests run as root, whom permissions do not stop, so the CLI runs as `nobody`
  (`support.AS_NOBODY`, setpriv).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    AS_NOBODY,
    assert_exactly_once,
    batchgpt,
    cli_env,
    complete_lines,
    nobody_owns,
    public_tmp_fixture,  # noqa: F401  (the `public_tmp` fixture)
    run_args,
    write_prompts,
)

SHIM_SOURCE = Path(__file__).with_name("fault_shim.c")


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled LD_PRELOAD fault shim."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fault shim")
    library = tmp_path_factory.mktemp("shim") / "fault_shim.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(library), str(SHIM_SOURCE), "-ldl"],
        check=True,
    )
    return library


def faulty(shim: Path, path: str, ops: str, code: int = errno.EIO) -> dict[str, str]:
    """A CLI environment in which the calls `ops` fail with `code` on the file ending `path`."""
    return cli_env(LD_PRELOAD=str(shim), FAULT_PATH=path, FAULT_OPS=ops, FAULT_ERRNO=str(code))


@pytest.fixture
def tiny_fs(tmp: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted for this test, to fill up for real."""
    mount = tmp / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as stream:
        try:
            while stream.write(b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def assert_one_line_error(stderr: str, *expected: str) -> str:
    """The run failed with one `batchgpt: error:` line holding `expected`, and no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("batchgpt: error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    for text in expected:
        assert text in errors[0], stderr
    return errors[0]


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# the lock file -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ops", "code", "reason"),
    [
        ("write", errno.EIO, "I/O error"),
        ("ftruncate", errno.EIO, "I/O error"),
        ("write", errno.ENOSPC, "disk full"),
    ],
    ids=["write-EIO", "truncate-EIO", "write-ENOSPC"],
)
def test_an_io_error_on_the_lock_file_exits_74_naming_it(
    emulator, tmp: Path, shim: Path, ops: str, code: int, reason: str
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "out.jsonl"
    ids = write_prompts(prompts, 10)
    args = run_args(prompts, emulator.url, "-o", str(output))

    failed = batchgpt(args, env=faulty(shim, "out.jsonl.lock", ops, code))

    assert failed.returncode == 74, failed.stderr
    assert_one_line_error(failed.stderr, f"cannot write {output}.lock: {reason}", "resumable")
    assert names(tmp) == ["out.jsonl.lock", "prompts.jsonl"]  # nothing else was touched
    assert emulator.stats.gets + emulator.stats.posts == 0
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


def test_a_full_disk_under_the_lock_file_exits_74(emulator, tmp: Path, tiny_fs: Path) -> None:
    prompts, output = tmp / "prompts.jsonl", tiny_fs / "out.jsonl"
    ids = write_prompts(prompts, 10)
    args = run_args(prompts, emulator.url, "-o", str(output))
    filler = fill(tiny_fs)

    full = batchgpt(args)

    assert full.returncode == 74, full.stderr
    assert_one_line_error(full.stderr, f"cannot write {output}.lock: disk full")
    assert emulator.stats.gets + emulator.stats.posts == 0
    filler.unlink()
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


# recovery ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ops", ["ftruncate", "fsync"])
def test_an_io_error_cutting_a_torn_tail_exits_74_and_a_later_run_cuts_it(
    emulator, tmp: Path, shim: Path, ops: str
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "out.jsonl"
    ids = write_prompts(prompts, 20)
    args = run_args(prompts, emulator.url, "-o", str(output))
    assert batchgpt(args).returncode == 0
    data = output.read_bytes()
    torn = data[: data.index(b"\n", len(data) // 2) + 30]
    output.write_bytes(torn)
    posts = emulator.stats.posts

    failed = batchgpt(args, env=faulty(shim, "out.jsonl", ops))

    assert failed.returncode == 74, failed.stderr
    assert_one_line_error(failed.stderr, f"cannot cut the torn tail of {output}: I/O error")
    assert emulator.stats.posts == posts
    if ops == "ftruncate":
        assert output.read_bytes() == torn
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


@pytest.mark.emulator_config(truncate_rate=1.0)
def test_an_io_error_rewriting_the_output_exits_74_and_leaves_it_whole(
    emulator, tmp: Path, shim: Path
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "out.jsonl"
    ids = write_prompts(prompts, 10)
    args = run_args(prompts, emulator.url, "-o", str(output), "--retries", "0")
    assert batchgpt(args).returncode == 1  # every answer cut: retryable error records
    emulator.configure(truncate_rate=0.0)
    before, posts = output.read_bytes(), emulator.stats.posts

    failed = batchgpt([*args, "--retry-errors"], env=faulty(shim, ".rewrite.tmp", "fsync"))

    assert failed.returncode == 74, failed.stderr
    assert_one_line_error(failed.stderr, f"cannot rewrite {output}: I/O error")
    assert output.read_bytes() == before
    assert not list(tmp.glob(".*.tmp")), "the rewrite's temp file was left behind"
    assert emulator.stats.posts == posts
    retried = batchgpt([*args, "--retry-errors"])
    assert retried.returncode == 0, retried.stderr
    assert_exactly_once(output, ids)


# writing results and the checkpoint --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "ops", "named"),
    [
        ("out.jsonl", "write", "cannot write {output}: I/O error"),
        ("out.jsonl", "fsync", "cannot sync {output}: I/O error"),
        (".tmp", "write", "cannot write {output}.ckpt: I/O error"),
        (".tmp", "fsync", "cannot write {output}.ckpt: I/O error"),
    ],
    ids=["output-write", "output-fsync", "checkpoint-write", "checkpoint-fsync"],
)
def test_an_io_error_on_the_output_or_the_checkpoint_exits_74_naming_it(
    emulator, tmp: Path, shim: Path, path: str, ops: str, named: str
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "out.jsonl"
    ids = write_prompts(prompts, 20)
    args = run_args(prompts, emulator.url, "-o", str(output))

    failed = batchgpt(args, env=faulty(shim, path, ops))

    assert failed.returncode == 74, failed.stderr
    assert_one_line_error(failed.stderr, named.format(output=output), "resumable")
    assert not list(tmp.glob(".*.tmp")), "a temp file was left behind"
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


def test_a_disk_that_fills_up_mid_run_exits_74_and_resumes_once_freed(
    emulator, tmp: Path, tiny_fs: Path
) -> None:
    prompts, output = tmp / "prompts.jsonl", tiny_fs / "out.jsonl"
    ids = write_prompts(prompts, 600)
    args = run_args(prompts, emulator.url, "-o", str(output), "--sync-lines", "50")
    ballast = tiny_fs / "ballast"
    ballast.write_bytes(b"\0" * 128 * 1024)  # half the disk: the results fill the rest

    full = batchgpt(args)

    assert full.returncode == 74, full.stderr
    line = assert_one_line_error(full.stderr, "disk full", "resumable")
    assert str(output) in line  # the output or its checkpoint
    assert 0 < complete_lines(output) < len(ids)
    ballast.unlink()
    resumed = batchgpt(args)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(output, ids)


# permissions -------------------------------------------------------------------------------------


def test_an_output_folder_that_is_not_writable_exits_2_naming_it(
    emulator, public_tmp: Path
) -> None:
    prompts, folder = public_tmp / "prompts.jsonl", public_tmp / "root-only"
    folder.mkdir(mode=0o755)
    write_prompts(prompts, 5)
    output = folder / "out.jsonl"

    refused = batchgpt([*AS_NOBODY, *run_args(prompts, emulator.url, "-o", str(output))])

    assert refused.returncode == 2, refused.stderr
    assert_one_line_error(refused.stderr, f"cannot open {output}.lock: permission denied")
    assert names(folder) == []
    assert emulator.stats.gets + emulator.stats.posts == 0


def test_an_output_file_that_is_not_writable_exits_2_naming_it(emulator, public_tmp: Path) -> None:
    prompts, folder = public_tmp / "prompts.jsonl", public_tmp / "shared"
    folder.mkdir(mode=0o755)
    output = folder / "out.jsonl"
    write_prompts(prompts, 12)
    args = run_args(prompts, emulator.url, "-o", str(output))
    assert batchgpt(args).returncode == 0  # root's output, 0644
    (folder / "out.jsonl.lock").unlink()
    nobody_owns(folder)  # nobody may write in the folder, not to root's output
    before, posts = output.read_bytes(), emulator.stats.posts

    refused = batchgpt([*AS_NOBODY, *args])

    assert refused.returncode == 2, refused.stderr
    assert_one_line_error(refused.stderr, f"cannot open {output}: permission denied")
    assert output.read_bytes() == before
    assert emulator.stats.posts == posts
