"""Exactly-once results: the output file is the log, the checkpoint says what it was made from.

- Result lines are appended by one writer, each in a single write, so after kill -9 only requests
  in flight are redone. Every `sync_lines` lines or `sync_seconds` the output is fsynced and the
  checkpoint (input fingerprint, result-shaping options, committed offset, counts) is replaced
  atomically: temp file, fsync, os.replace, fsync of the folder.
- On resume `recover_output` reads the output once: a torn or garbage tail is cut, a bad line in the
  middle stops the run (exit 2) unless `repair` drops it, a line repeated for one input line counts
  as corruption. What it read is the done set: input lines are skipped by number.
- `JobLock` holds an flock on OUTPUT.lock for the whole run; the kernel drops it even after kill -9.
  OUTPUT is its real path (config.real_path), so any name of the file reaches the same lock.
- `Checkpoint` is the checkpoint file's content, a versioned record; `Checkpoint.load` refuses an
  unknown version or shape by name, since the output alone is enough to resume.
- `scan_input` fingerprints exactly the bytes a run will read (sha256 and size); a resume whose
  input only grew (its first `size` bytes as before, ending a line) goes on with the new lines,
  any other change is refused. Scan and recovery stop (`Interrupted`) when asked, changing nothing.
- Every OSError on these files becomes a JobError naming the file (errors.file_error): exit 74,
  or 2 for a path the user must fix.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import orjson

from batchgpt.errors import (
    CorruptOutputError,
    InputChangedError,
    JobLockedError,
    OutputWriteError,
    file_error,
    file_errors,
)
from batchgpt.formats import Outcome, decode_outcome
from batchgpt.inputs import IdIndex, LineSet, index_key

CHECKPOINT_VERSION = 1


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file, whole."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_directory(path.parent)


class Interrupted(Exception):
    """A read of the input or the output was stopped (a signal) before anything was changed."""


@dataclass(frozen=True)
class InputScan:
    """One read of the input: its fingerprint (sha256 and size of what the run will read), its
    physical lines, and the fingerprint of its first `prefix` bytes, to tell whether an input
    only grew since a checkpoint (None when it is shorter than that)."""

    fingerprint: dict[str, Any]
    lines: int
    prefix: dict[str, Any] | None = None
    prefix_ends_a_line: bool = True


def scan_input(
    path: Path, *, prefix: int | None = None, stop: Callable[[], bool] | None = None
) -> InputScan:
    """Fingerprint and count the lines of `path` in one read; `stop` is asked after each chunk
    (`Interrupted` when true). The fingerprint covers exactly the bytes read: the run reads no
    further, so lines appended meanwhile wait for the next run."""
    digest = hashlib.sha256()
    size = lines = 0
    last = b"\n"
    seen: dict[str, Any] | None = None
    seen_ends_a_line = True
    with path.open("rb") as stream:
        while True:
            if prefix is not None and seen is None and size == prefix:
                seen = {"sha256": digest.hexdigest(), "size": size}
                seen_ends_a_line = last == b"\n"
            wanted = 1 << 20 if prefix is None or size >= prefix else min(1 << 20, prefix - size)
            chunk = stream.read(wanted)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            if stop is not None and stop():
                raise Interrupted
    fingerprint = {"sha256": digest.hexdigest(), "size": size}
    return InputScan(fingerprint, lines + (last != b"\n"), seen, seen_ends_a_line)


def file_fingerprint(path: Path) -> dict[str, Any]:
    """sha256 and size of the input: what decides whether a checkpoint still applies."""
    return scan_input(path).fingerprint


# lock -----------------------------------------------------------------------------------------


class JobLock:
    """An exclusive, non-blocking flock on `path`, which also names its holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise JobLockedError (75); an I/O failure names the lock file."""
        with file_errors("open", self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with file_errors("lock", self.path):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise JobLockedError(
                        f"another run holds {self.path} ({_holder(fd)}); nothing was touched"
                    ) from None
            with file_errors("write", self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def lock_holder(path: Path) -> str | None:
    """Who holds the lock at `path` right now, or None."""
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)
    return None


def _holder(fd: int, wait: float = 0.5) -> str:
    """The holder's line from the lock file. It is written just after the lock is taken, so an
    empty file is read again for a moment rather than reported as "another process"."""
    deadline = time.monotonic() + wait
    while not (text := os.pread(fd, 200, 0).decode(errors="replace").strip()):
        if time.monotonic() >= deadline:
            return "another process"
        time.sleep(0.01)
    return text.splitlines()[0]


# checkpoint -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """What the output was made from (input fingerprint, result-shaping options) and how much of
    it is durable (`output_offset`), with the counts it holds there."""

    input_path: str
    input: dict[str, Any]
    options: dict[str, Any]
    output_offset: int = 0
    counts: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0
    version: int = CHECKPOINT_VERSION

    def dump(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        """The checkpoint at `path`; None when there is none; InputChangedError (exit 2) naming
        the file when it cannot be read as one."""
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise _unreadable(path, str(exc)) from exc
        if not isinstance(data, dict):
            raise _unreadable(path, f"a JSON {type(data).__name__}, not an object")
        version = data.get("version")
        if version != CHECKPOINT_VERSION or isinstance(version, bool):
            raise _unreadable(
                path, f"version {version!r}, this batchgpt reads version {CHECKPOINT_VERSION}"
            )
        types: dict[str, type | tuple[type, ...]] = {
            "input_path": str,
            "input": dict,
            "options": dict,
            "output_offset": int,
            "counts": dict,
            "updated_at": (int, float),
        }
        for name, wanted in types.items():
            if name in data and (
                not isinstance(data[name], wanted) or isinstance(data[name], bool)
            ):
                raise _unreadable(path, f"{name!r} has the wrong type")
        missing = {"input_path", "input", "options"} - set(data)
        if missing:
            raise _unreadable(path, f"no {sorted(missing)[0]!r}")
        fingerprint = data["input"]
        if not (
            isinstance(fingerprint.get("sha256"), str)
            and type(fingerprint.get("size")) is int
            and fingerprint["size"] >= 0
        ):
            raise _unreadable(path, "'input' is not a sha256 and a size")
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})

    def check(self, scan: InputScan, options: dict[str, Any], input_path: Path) -> bool:
        """Refuse to resume a job whose input or result-shaping options changed; True when the
        input only grew (lines appended, its first `size` bytes as before)."""
        advice = "to start over, run again with --restart"
        old, new = self.input, scan.fingerprint
        grew = old != new and scan.prefix == old
        if old != new and not (grew and scan.prefix_ends_a_line):
            if grew:
                what = "its last line was extended (it had no line end), not only appended to"
            elif new["size"] < old["size"]:
                what = f"it is shorter (size {old['size']} → {new['size']})"
            elif new["size"] == old["size"]:
                what = f"its content differs (sha256 {old['sha256'][:12]} → {new['sha256'][:12]})"
            else:
                what = (
                    f"its first {old['size']} bytes differ, it was not only appended to "
                    f"(size {old['size']} → {new['size']}, sha256 {old['sha256'][:12]} → "
                    f"{new['sha256'][:12]})"
                )
            raise InputChangedError(f"{input_path} changed since the checkpoint: {what}; {advice}")
        changed = [
            f"{key} {self.options.get(key)!r} → {options.get(key)!r}"
            for key in sorted(set(self.options) | set(options))
            if self.options.get(key) != options.get(key)
        ]
        if changed:
            raise InputChangedError(
                f"options that shape results changed since the checkpoint: {', '.join(changed)}; "
                f"{advice}"
            )
        return grew


def _unreadable(path: Path, reason: str) -> InputChangedError:
    return InputChangedError(
        f"checkpoint {path} is unreadable ({reason}); the output alone is enough to resume: "
        "delete the checkpoint and run again (--restart would throw the output away)"
    )


# output ---------------------------------------------------------------------------------------


@dataclass
class RecoveredOutput:
    """The done set rebuilt from an output file."""

    done: LineSet = field(default_factory=LineSet)
    seen: IdIndex = field(default_factory=IdIndex)
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    size: int = 0
    cut_bytes: int = 0
    dropped_lines: int = 0

    def add(self, record: Outcome) -> bool:
        """Count `record` in; False (and nothing counted) when its line is done already."""
        assert record.line is not None  # decode_outcome guarantees it
        if not self.done.add(record.line):
            return False
        if record.id is not None:
            self.seen.setdefault(index_key(record.id), record.line)
        if record.ok:
            self.ok += 1
        else:
            self.errors[record.kind or "unknown"] += 1
        return True


#: How many lines recovery reads between two looks at its `stop`.
_STOP_EVERY = 4096


def _scan(
    path: Path, stop: Callable[[], bool] | None
) -> tuple[RecoveredOutput, list[tuple[int, int, str]], int, int]:
    """The good lines read back, the bad ones (output line, byte offset, reason), the end of the
    last good line and the file size."""
    recovered = RecoveredOutput()
    bad: list[tuple[int, int, str]] = []
    offset = good_end = 0
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if stop is not None and number % _STOP_EVERY == 0 and stop():
                raise Interrupted
            reason = None
            if not raw.endswith(b"\n"):
                reason = "torn line (no line end)"
            else:
                try:
                    record = decode_outcome(raw)
                except ValueError as exc:
                    reason = f"not a result line ({str(exc)[:80]})"
                else:
                    if not recovered.add(record):
                        reason = f"second result for input line {record.line}"
            if reason:
                bad.append((number, offset, reason))
            offset += len(raw)
            if not reason:
                good_end = offset
    return recovered, bad, good_end, offset


def recover_output(
    path: Path,
    *,
    repair: bool = False,
    drop: Callable[[Outcome], bool] | None = None,
    read_only: bool = False,
    stop: Callable[[], bool] | None = None,
) -> RecoveredOutput:
    """Make `path` a clean log of complete results and read back what it holds.

    A bad tail is cut in place. Bad lines before good ones are corruption: reported with line and
    offset, or dropped when `repair` is set. Lines for which `drop` is true (retryable errors under
    --retry-errors) are removed too, by an atomic rewrite. `read_only` only reads the good lines.
    `stop` is asked now and then while reading or rewriting: `Interrupted` when true, with the
    file as it was.
    """
    if not path.exists():
        return RecoveredOutput()
    with file_errors("read", path):
        recovered, bad, good_end, size = _scan(path, stop)
    if read_only:
        return recovered
    middle = [entry for entry in bad if entry[1] < good_end]
    if middle and not repair:
        line, offset, reason = middle[0]
        more = f" (and {len(middle) - 1} more)" if len(middle) > 1 else ""
        raise CorruptOutputError(
            f"{path} is corrupt at line {line}, byte offset {offset}: {reason}{more}; "
            "nothing was touched. Run again with --repair to drop bad lines (their prompts are "
            "redone), or --restart to start over"
        )
    cut = size - good_end
    if cut:
        with file_errors("cut the torn tail of", path), path.open("r+b") as stream:
            stream.truncate(good_end)
            os.fsync(stream.fileno())
    if middle or drop is not None:
        with file_errors("rewrite", path):
            recovered = _rewrite(path, drop, stop)
    recovered.cut_bytes = cut
    recovered.size = path.stat().st_size
    return recovered


def _rewrite(
    path: Path, drop: Callable[[Outcome], bool] | None, stop: Callable[[], bool] | None
) -> RecoveredOutput:
    """Keep the good, first, undropped result of each input line; replace `path` atomically
    (a failed or stopped rewrite leaves `path` as it was, and no temp file)."""
    recovered = RecoveredOutput()
    temp = path.with_name(f".{path.name}.rewrite.tmp")
    try:
        with path.open("rb") as source, temp.open("wb") as target:
            for number, raw in enumerate(source, start=1):
                if stop is not None and number % _STOP_EVERY == 0 and stop():
                    raise Interrupted
                try:
                    record: Outcome | None = decode_outcome(raw)
                except ValueError:
                    record = None
                if record is None or (drop and drop(record)) or not recovered.add(record):
                    recovered.dropped_lines += 1
                    continue
                target.write(raw)
            target.flush()
            os.fsync(target.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_directory(path.parent)
    return recovered


class ResultLog:
    """The single writer's handle on the output and the checkpoint."""

    def __init__(self, output: Path, checkpoint: Path, header: Checkpoint) -> None:
        self.output = output
        self.checkpoint = checkpoint
        self.header = header
        with file_errors("open", output):
            self._fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.offset = os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        """Hand complete lines to the OS in one write; a short write is an I/O error.

        After a short write the rest is written once more, so the OS says why (ENOSPC, EFBIG)."""
        written = 0
        try:
            written = os.write(self._fd, data)
            if 0 < written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            raise file_error("write", self.output, exc) from exc
        if written != len(data):
            raise OutputWriteError(
                f"cannot write {self.output}: short write (disk full?); state is resumable, "
                "run again once fixed"
            )
        self.offset += written

    def commit(self, counts: dict[str, Any], offset: int | None = None) -> None:
        """fsync the output, then replace the checkpoint to point at what is now durable.

        `offset` is the output size `counts` describe (default: all appended so far); lines
        appended while a commit runs in another thread are covered by the next one."""
        offset = self.offset if offset is None else offset
        with file_errors("sync", self.output):
            os.fsync(self._fd)
        state = replace(self.header, output_offset=offset, counts=counts, updated_at=time.time())
        with file_errors("write", self.checkpoint):
            replace_atomically(self.checkpoint, state.dump())

    def close(self) -> None:
        os.close(self._fd)
