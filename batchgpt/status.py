"""`batchgpt status`: what a job's output and checkpoint say, and whether a run holds it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchgpt.checkpoint import Checkpoint, lock_holder, recover_output
from batchgpt.errors import UsageError
from batchgpt.inputs import Shard, read_prompts
from batchgpt.jobs import job_files


@dataclass
class JobStatus:
    output: Path
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    remaining: int | None = None
    updated_at: float | None = None
    locked_by: str | None = None
    shard: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "done": self.ok + sum(self.errors.values()),
            "ok": self.ok,
            "errors": self.errors,
            "remaining": self.remaining,
            "updated_at": self.updated_at,
            "running": self.locked_by,
            "shard": self.shard,
        }

    def to_json(self) -> str:
        return orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2).decode()

    def text(self) -> str:
        errors = ", ".join(f"{kind} {count}" for kind, count in sorted(self.errors.items()))
        updated = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.updated_at))
            if self.updated_at
            else "never"
        )
        lines = [
            f"output:    {self.output}" + (f" (shard {self.shard})" if self.shard else ""),
            f"done:      {self.ok + sum(self.errors.values())} ({self.ok} ok)",
            f"errors:    {sum(self.errors.values())}" + (f" ({errors})" if errors else ""),
            f"remaining: {'unknown' if self.remaining is None else self.remaining}",
            f"updated:   {updated}",
            f"running:   {self.locked_by or 'no'}",
        ]
        return "\n".join(lines)


def job_status(path: Path) -> JobStatus:
    """Read-only: nothing is cut or rewritten, even a torn tail."""
    files = job_files(path)
    checkpoint = Checkpoint.load(files.checkpoint)
    if checkpoint is None and not files.output.exists():
        raise UsageError(f"no job found at {path}: neither {files.output} nor its checkpoint exist")
    status = JobStatus(files.output, locked_by=lock_holder(files.lock))
    recovered = recover_output(files.output, read_only=True)
    status.ok, status.errors = recovered.ok, dict(recovered.errors)
    if checkpoint is None:
        return status
    status.updated_at = checkpoint.updated_at
    options = checkpoint.options
    status.shard = options.get("shard")
    input_path = Path(checkpoint.input_path)
    if input_path.is_file():
        # Every line still to handle counts, valid or not, so any model name will do here.
        status.remaining = sum(
            1
            for _ in read_prompts(
                input_path,
                default_model=str(options.get("model")),
                check_model=str,
                seen=recovered.seen,
                done=recovered.done,
                shard=Shard.parse(status.shard) if status.shard else None,
            )
        )
    return status
