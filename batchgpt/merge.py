"""`batchgpt merge`: join shard outputs into one file in which every input line appears once."""

from __future__ import annotations

import os
from pathlib import Path

from batchgpt.checkpoint import Checkpoint, fsync_directory
from batchgpt.errors import CorruptOutputError, MergeConflictError, UsageError
from batchgpt.formats import Result, decode_line
from batchgpt.inputs import DEFAULT_MAX_LINE_BYTES, LineSet, physical_lines
from batchgpt.jobs import JobFiles, results_files

SHOWN = 20


def _input_of(jobs: list[JobFiles]) -> Path | None:
    """The input the shards were made from, when their checkpoints agree on one."""
    checkpoints = [Checkpoint.load(job.checkpoint) for job in jobs]
    inputs = {checkpoint.input_path if checkpoint else None for checkpoint in checkpoints}
    if len(inputs) == 1 and (only := inputs.pop()):
        return Path(only)
    return None


def merge_outputs(output: Path, sources: list[Path], *, input_path: Path | None = None) -> int:
    """Concatenate the shard outputs `sources` (or the outputs of their job files) into `output`
    (atomically); refuse overlaps and, when the input is known, missing lines. Returns the number
    of results written."""
    jobs = [results_files(source) for source in sources]
    shards = [job.output for job in jobs]
    for shard in shards:
        if not shard.is_file():
            raise UsageError(f"cannot read shard output {shard}: no such file")
    seen = LineSet()
    duplicates: list[str] = []
    temp = output.with_name(f".{output.name}.merge.tmp")
    try:
        with temp.open("wb") as target:
            for shard in shards:
                with shard.open("rb") as source:
                    for number, raw in enumerate(source, start=1):
                        try:
                            record: Result | None = (
                                decode_line(raw) if raw.endswith(b"\n") else None
                            )
                        except ValueError:
                            record = None
                        if record is None:
                            raise CorruptOutputError(
                                f"{shard}:{number}: not a complete result line; finish or "
                                "resume that shard first"
                            )
                        assert record.line is not None
                        if not seen.add(record.line):
                            if len(duplicates) < SHOWN:
                                duplicates.append(
                                    f"id {record.id!r} (input line {record.line}) in {shard}"
                                )
                            else:
                                duplicates.append("")
                            continue
                        target.write(raw)
            target.flush()
            os.fsync(target.fileno())
        input_path = input_path or _input_of(jobs)
        missing = _missing_lines(input_path, seen) if input_path else []
        if duplicates or missing:
            raise MergeConflictError(_conflict(duplicates, missing, input_path))
        os.replace(temp, output)
        fsync_directory(output.parent)
    finally:
        temp.unlink(missing_ok=True)
    return seen.count


def _missing_lines(input_path: Path, seen: LineSet) -> list[int]:
    return [
        number
        for number, raw in physical_lines(input_path, DEFAULT_MAX_LINE_BYTES)
        if number not in seen and (raw is None or raw.strip())
    ]


def _conflict(duplicates: list[str], missing: list[int], input_path: Path | None) -> str:
    parts = []
    if duplicates:
        shown = "; ".join(d for d in duplicates if d)
        parts.append(f"{len(duplicates)} results appear in more than one shard: {shown}")
    if missing:
        lines = ", ".join(map(str, missing[:SHOWN])) + (" …" if len(missing) > SHOWN else "")
        parts.append(f"{len(missing)} lines of {input_path} have no result (lines {lines})")
    return "merge refused, nothing written: " + "; ".join(parts)
