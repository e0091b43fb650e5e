"""`batchgpt merge`: shard outputs joined into one file in which every input line appears once.

Shards are given as results files (of any name, in either output shape) or as their job files, a
job file's own `output` included; overlaps and torn lines are refused with nothing written, and
lines missing from the input are named, with the input taken from --input or from the shards'
checkpoints. (test_jobs.py runs three real shards and merges them through the CLI.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import CLI, assert_exactly_once, batchgpt, write_prompts

from batchgpt.checkpoint import Checkpoint, file_fingerprint
from batchgpt.errors import CorruptOutputError, MergeConflictError, UsageError
from batchgpt.formats import ErrorInfo, Result, decode_line, encode
from batchgpt.merge import SHOWN, merge_outputs


def shard(path: Path, lines: list[int], *, output_format: str = "native") -> Path:
    """A results file with one result for each of `lines` (every seventh an error)."""
    with path.open("wb") as stream:
        for line in lines:
            error = ErrorInfo("captcha", "gate") if line % 7 == 0 else None
            response = None if error else f"answer {line}"
            result = Result(f"q{line - 1}", line, "gpt-4o", response=response, error=error)
            stream.write(encode(result, output_format))
    return path


def merged_lines(path: Path) -> list[int]:
    return [decode_line(raw).line for raw in path.read_bytes().splitlines(keepends=True)]


def test_shards_are_joined_in_order_each_line_once(tmp: Path) -> None:
    first = shard(tmp / "a.results.jsonl", [1, 4, 7])
    second = shard(tmp / "b.results.jsonl", [2, 5])
    third = shard(tmp / "c.results.jsonl", [3, 6, 8])

    count = merge_outputs(tmp / "all.jsonl", [first, second, third])

    assert count == 8
    data = (tmp / "all.jsonl").read_bytes()
    assert data == first.read_bytes() + second.read_bytes() + third.read_bytes()
    assert sorted(merged_lines(tmp / "all.jsonl")) == list(range(1, 9))
    assert sorted(p.name for p in tmp.iterdir()) == [
        "a.results.jsonl",
        "all.jsonl",
        "b.results.jsonl",
        "c.results.jsonl",
    ]  # no temp file left


def test_results_files_of_any_name_and_either_shape_merge(tmp: Path) -> None:
    """A shard copied from another host keeps no checkpoint and may have any name."""
    native = shard(tmp / "host1.jsonl", [1, 3])
    openai = shard(tmp / "host2-batch-output.jsonl", [2, 4], output_format="openai")

    assert merge_outputs(tmp / "all.jsonl", [native, openai]) == 4
    assert sorted(merged_lines(tmp / "all.jsonl")) == [1, 2, 3, 4]

    done = batchgpt([*CLI, "merge", str(tmp / "cli.jsonl"), str(native), str(openai)])
    assert done.returncode == 0, done.stderr
    assert (tmp / "cli.jsonl").read_bytes() == (tmp / "all.jsonl").read_bytes()


def test_an_overlap_is_refused_naming_the_line_the_id_and_the_shard(tmp: Path) -> None:
    first = shard(tmp / "a.results.jsonl", [1, 2, 3])
    second = shard(tmp / "b.results.jsonl", [3, 4])
    target = tmp / "all.jsonl"
    target.write_bytes(b"kept\n")

    with pytest.raises(MergeConflictError) as caught:
        merge_outputs(target, [first, second])

    message = caught.value.message
    assert caught.value.exit_code == 65
    assert "nothing written" in message
    assert f"1 results appear in more than one shard: id 'q2' (input line 3) in {second}" in message
    assert target.read_bytes() == b"kept\n"
    assert sorted(p.name for p in tmp.iterdir()) == [
        "a.results.jsonl",
        "all.jsonl",
        "b.results.jsonl",
    ]


def test_many_overlaps_are_all_counted_and_the_first_few_shown(tmp: Path) -> None:
    lines = list(range(1, SHOWN + 11))
    first, second = shard(tmp / "a.jsonl", lines), shard(tmp / "b.jsonl", lines)
    with pytest.raises(MergeConflictError) as caught:
        merge_outputs(tmp / "all.jsonl", [first, second])
    message = caught.value.message
    assert f"{SHOWN + 10} results appear in more than one shard" in message
    assert message.count(f"in {second}") == SHOWN
    assert not (tmp / "all.jsonl").exists()


def test_lines_missing_from_the_input_are_named(tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 6)
    with prompts.open("a") as stream:
        stream.write("\n   \n")  # blank lines need no result
    first = shard(tmp / "a.jsonl", [1, 2])
    second = shard(tmp / "b.jsonl", [4])

    with pytest.raises(MergeConflictError) as caught:
        merge_outputs(tmp / "all.jsonl", [first, second], input_path=prompts)

    assert f"3 lines of {prompts} have no result (lines 3, 5, 6)" in caught.value.message
    assert not (tmp / "all.jsonl").exists()


def test_the_input_comes_from_the_shards_checkpoints_when_they_agree(tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 4)
    shards = [shard(tmp / "a.jsonl", [1, 3]), shard(tmp / "b.jsonl", [2])]
    for path in shards:
        checkpoint = Checkpoint(str(prompts), file_fingerprint(prompts), {"model": "gpt-4o"})
        Path(f"{path}.ckpt").write_bytes(checkpoint.dump())

    with pytest.raises(MergeConflictError, match=r"1 lines of .* have no result \(lines 4\)"):
        merge_outputs(tmp / "all.jsonl", shards)

    shard(tmp / "c.jsonl", [4])
    assert merge_outputs(tmp / "all.jsonl", [*shards, tmp / "c.jsonl"]) == 4


def test_a_torn_or_foreign_line_in_a_shard_is_refused(tmp: Path) -> None:
    good = shard(tmp / "a.jsonl", [1])
    torn = shard(tmp / "b.jsonl", [2, 3])
    torn.write_bytes(torn.read_bytes()[:-10])
    with pytest.raises(CorruptOutputError, match=rf"{torn}:2: not a complete result line"):
        merge_outputs(tmp / "all.jsonl", [good, torn])
    foreign = tmp / "c.jsonl"
    foreign.write_text(json.dumps({"hello": "world"}) + "\n")
    with pytest.raises(CorruptOutputError, match=rf"{foreign}:1"):
        merge_outputs(tmp / "all.jsonl", [good, foreign])
    assert not (tmp / "all.jsonl").exists()


def test_a_missing_shard_is_a_usage_error(tmp: Path) -> None:
    with pytest.raises(UsageError, match="cannot read shard output"):
        merge_outputs(tmp / "all.jsonl", [tmp / "nowhere.results.jsonl"])


def test_shards_given_as_job_files_are_found_by_their_own_output(emulator, tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    ids = write_prompts(prompts, 24)
    jobs = []
    for index in range(2):
        job = tmp / f"shard{index}.toml"
        job.write_text(
            'input = "prompts.jsonl"\n'
            f'shard = "{index}/2"\n'
            f'output = "out/part-{index}.jsonl"\n'
            f'checkpoint = "state/part-{index}.state"\n'
            f'base_url = "{emulator.url}"\n'
        )
        jobs.append(job)
    (tmp / "out").mkdir()
    (tmp / "state").mkdir()
    for job in jobs:
        ran = batchgpt([*CLI, "run", str(job), "--no-progress"])
        assert ran.returncode == 0, ran.stderr

    done = batchgpt([*CLI, "merge", str(tmp / "all.jsonl"), *map(str, jobs)])

    assert done.returncode == 0, done.stderr
    assert "merged 24 results from 2 files" in done.stderr
    assert_exactly_once(tmp / "all.jsonl", ids)

    (tmp / "out" / "part-1.jsonl").write_bytes(b"")  # a shard that lost its results
    missing = batchgpt([*CLI, "merge", str(tmp / "again.jsonl"), *map(str, jobs)])
    assert missing.returncode == 65, missing.stderr  # the input, from the custom checkpoints
    assert f"lines of {prompts} have no result" in missing.stderr
