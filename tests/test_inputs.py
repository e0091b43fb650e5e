"""Reading prompt files (issue #5): physical lines, bad lines, duplicate ids, shards.

Lines end at `\\n` only (a `\\r` before it is dropped, a lone `\\r` is no line break), a BOM and
blank lines are ignored silently, and every physical line counts for numbering. A file mixing every
input shape with every kind of bad line runs to exit 1 with each good prompt answered and nothing
sent for a bad one (test_validate.py: `batchgpt validate` reports the same lines).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import MAX_LINE, line_id, mixed_file, read_results, run_job, sent_message

from batchgpt.emulator import expected_answer
from batchgpt.errors import INVALID_INPUT
from batchgpt.inputs import (
    BOM,
    IdIndex,
    LineSet,
    Shard,
    index_key,
    physical_lines,
    read_prompts,
)
from batchgpt.providers.chatgpt_es.backend import ChatGptEsBackend
from batchgpt.records import InvalidLine, PromptRecord, id_key


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def read_all(path: Path, **options: Any) -> list[PromptRecord | InvalidLine]:
    return list(
        read_prompts(
            path,
            default_model="gpt-4o",
            check_model=ChatGptEsBackend.check_model,
            seen=IdIndex(),
            **options,
        )
    )


def prompt(text: str, **fields: Any) -> bytes:
    return json.dumps({"prompt": text, **fields}).encode()


# physical lines -----------------------------------------------------------------------------


def test_bom_crlf_blank_and_whitespace_lines_are_accepted_silently(tmp: Path) -> None:
    data = (
        BOM
        + prompt("one")
        + b"\r\n"
        + b"\r\n"  # blank (CRLF)
        + b"\n"  # blank
        + b" \t \r\n"  # whitespace only
        + prompt("five", id="five")
        + b"\n"
        + b"   \n"
        + prompt("seven")  # no final newline
    )
    items = read_all(write_bytes(tmp / "p.jsonl", data))
    assert all(isinstance(item, PromptRecord) for item in items)
    assert [(item.id, item.line) for item in items] == [(1, 1), ("five", 5), (7, 7)]
    assert [item.messages[0]["content"] for item in items] == ["one", "five", "seven"]


def test_a_lone_carriage_return_is_not_a_line_break(tmp: Path) -> None:
    data = prompt("a") + b"\r" + prompt("b") + b"\n" + prompt("c") + b"\n"
    items = read_all(write_bytes(tmp / "p.jsonl", data))
    assert isinstance(items[0], InvalidLine) and items[0].line == 1
    assert "not JSON" in items[0].reason
    assert isinstance(items[1], PromptRecord)
    assert (items[1].line, items[1].messages[0]["content"]) == (2, "c")


def test_a_carriage_return_inside_whitespace_is_just_whitespace(tmp: Path) -> None:
    items = read_all(write_bytes(tmp / "p.jsonl", prompt("x") + b" \r \r\n"))
    assert [(type(item), item.line) for item in items] == [(PromptRecord, 1)]


def test_a_bom_only_counts_at_the_start_of_the_file(tmp: Path) -> None:
    items = read_all(write_bytes(tmp / "p.jsonl", prompt("a") + b"\n" + BOM + prompt("b")))
    assert isinstance(items[0], PromptRecord)
    assert isinstance(items[1], InvalidLine) and items[1].line == 2


def reference_lines(data: bytes, limit: int) -> list[tuple[int, bytes | None]]:
    """What `physical_lines` must yield, computed the obvious way on the whole file."""
    data = data.removeprefix(BOM)
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    lines = []
    for number, piece in enumerate(pieces, start=1):
        # A last line without "\n" is measured with its trailing "\r" (which is then dropped):
        # a one-byte quirk at end of file that only matters at exactly the limit.
        unterminated = number == len(pieces) and not data.endswith(b"\n")
        too_long = len(piece if unterminated else piece.removesuffix(b"\r")) > limit
        lines.append((number, None if too_long else piece.removesuffix(b"\r")))
    return lines


FILES = st.lists(
    st.tuples(
        st.binary(max_size=24).map(lambda b: b.replace(b"\n", b"x")),
        st.sampled_from([b"\n", b"\r\n", b"\r\r\n", b"\r", b""]),
    ),
    max_size=8,
).map(lambda parts: b"".join(text + end for text, end in parts))


@given(data=FILES, limit=st.integers(1, 20), bom=st.booleans())
def test_physical_lines_match_a_plain_split(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, limit: int, bom: bool
) -> None:
    path = tmp_path_factory.mktemp("lines") / "p.jsonl"
    data = (BOM if bom else b"") + data
    path.write_bytes(data)
    assert list(physical_lines(path, limit)) == reference_lines(data, limit)


@given(
    data=FILES,
    appended=FILES,
    limit=st.integers(1, 20),
    bom=st.booleans(),
    cut=st.integers(0, 300),
)
def test_physical_lines_read_no_further_than_the_size_given(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    appended: bytes,
    limit: int,
    bom: bool,
    cut: int,
) -> None:
    path = tmp_path_factory.mktemp("lines") / "p.jsonl"
    data = (BOM if bom else b"") + data
    size = min(cut, len(data))
    path.write_bytes(data + appended)  # appended after the run fingerprinted `size` bytes
    assert list(physical_lines(path, limit, size)) == reference_lines(data[:size], limit)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
@pytest.mark.parametrize("bom", [b"", BOM])
@pytest.mark.parametrize("extra", [-1, 0, 1, 2, 3, 50])
def test_the_line_limit_applies_to_the_content_only(
    tmp: Path, ending: bytes, bom: bytes, extra: int
) -> None:
    limit = 64
    first = prompt("x" * (limit - len(prompt("")) + extra))
    path = write_bytes(tmp / "p.jsonl", bom + first + ending + prompt("next") + ending)
    items = read_all(path, max_line_bytes=limit)
    assert [item.line for item in items] == [1, 2], "an over-long line must not spill over"
    if len(first) <= limit:
        assert isinstance(items[0], PromptRecord)
    else:
        assert isinstance(items[0], InvalidLine)
        assert items[0].reason == f"line is longer than {limit} bytes"
    assert isinstance(items[1], PromptRecord)


# bad lines and duplicate ids ----------------------------------------------------------------


def test_a_duplicate_id_keeps_the_first_line_and_names_it(tmp: Path) -> None:
    data = b"\n".join(
        [
            prompt("first", id="q"),
            prompt("other", id="r"),
            prompt("second", id="q"),
            json.dumps(
                {
                    "custom_id": "q",
                    "url": "/v1/chat/completions",
                    "body": {"messages": [{"role": "user", "content": "third"}]},
                }
            ).encode(),
            prompt("numeric", id=5),
            prompt("text five", id="5"),
        ]
    )
    items = read_all(write_bytes(tmp / "p.jsonl", data))
    assert [type(item).__name__ for item in items] == [
        "PromptRecord",
        "PromptRecord",
        "InvalidLine",
        "InvalidLine",
        "PromptRecord",
        "InvalidLine",
    ]
    for item, line, first in [(items[2], 3, 1), (items[3], 4, 1), (items[5], 6, 5)]:
        assert isinstance(item, InvalidLine)
        assert item.id is None
        assert item.line == line
        assert "duplicate id" in item.reason and f"first on line {first}" in item.reason


def test_a_bad_line_with_an_id_still_claims_it(tmp: Path) -> None:
    data = prompt("x", id="a", model="gpt-5") + b"\n" + prompt("y", id="a") + b"\n"
    first, second = read_all(write_bytes(tmp / "p.jsonl", data))
    assert isinstance(first, InvalidLine) and first.id == "a"
    assert isinstance(second, InvalidLine) and "first on line 1" in second.reason


def test_done_lines_are_skipped_without_parsing(tmp: Path) -> None:
    data = b"\n".join([prompt("a"), b"{broken", prompt("c")])
    done = LineSet()
    done.add(2)
    items = list(
        read_prompts(
            write_bytes(tmp / "p.jsonl", data),
            default_model="gpt-4o",
            check_model=ChatGptEsBackend.check_model,
            seen=IdIndex(),
            done=done,
        )
    )
    assert [(type(item), item.line) for item in items] == [(PromptRecord, 1), (PromptRecord, 3)]


# IdIndex, LineSet, Shard --------------------------------------------------------------------

KEYS = st.integers(0, 2**62).map(lambda n: n * 2 + 1)


@given(st.lists(st.tuples(KEYS | st.sampled_from([1, 3, 1025, 2049]), st.integers(1, 2**32 - 1))))
def test_id_index_behaves_like_a_dict(pairs: list[tuple[int, int]]) -> None:
    index, model = IdIndex(capacity=4), {}
    for key, line in pairs:
        assert index.setdefault(key, line) == model.setdefault(key, line)
        assert len(index) == len(model)


def test_id_index_keeps_every_key_through_many_growths() -> None:
    index = IdIndex(capacity=2)
    keys = [index_key(f"id-{n}") for n in range(5000)]
    for line, key in enumerate(keys, start=1):
        assert index.setdefault(key, line) == line
    assert len(index) == 5000
    assert all(index.setdefault(key, 0) == line for line, key in enumerate(keys, start=1))


def test_index_keys_are_nonzero_63_bit_and_treat_5_and_text_5_alike() -> None:
    assert index_key(5) == index_key("5")
    keys = {index_key(f"id-{n}") for n in range(10_000)}
    assert len(keys) == 10_000
    assert all(0 < key < 2**63 and key & 1 for key in keys)


@given(st.lists(st.integers(0, 5000)), st.lists(st.integers(0, 6000)))
def test_line_set_behaves_like_a_set(added: list[int], probes: list[int]) -> None:
    lines, model = LineSet(), set()
    for line in added:
        assert lines.add(line) == (line not in model)
        model.add(line)
    assert lines.count == len(model)
    assert all((probe in lines) == (probe in model) for probe in probes + added)


@given(st.lists(st.text(max_size=6) | st.integers(), max_size=50), st.integers(1, 7))
def test_shards_split_the_ids_into_disjoint_covering_parts(ids: list[Any], count: int) -> None:
    shards = [Shard(index, count) for index in range(count)]
    for record_id in ids:
        assert sum(shard.owns(id_key(record_id)) for shard in shards) == 1


@pytest.mark.parametrize("text", ["3", "1/0", "2/2", "-1/3", "a/b", "1/2/3", ""])
def test_bad_shard_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Shard.parse(text)


def test_shard_specs_parse() -> None:
    assert Shard.parse("0/1") == Shard(0, 1)
    assert str(Shard.parse("2/5")) == "2/5"


# a whole file through the CLI ---------------------------------------------------------------


def test_a_file_mixing_shapes_and_bad_lines_answers_every_good_line_and_sends_no_bad_one(
    emulator, tmp: Path
) -> None:
    path, good_lines, reasons = mixed_file(tmp)

    done = run_job(path, emulator.url, "--max-line-bytes", str(MAX_LINE))

    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    results = read_results(tmp / "prompts.results.jsonl")
    assert len(results) == len(good_lines) + len(reasons)
    by_line = {result["line"]: result for result in results}
    assert set(by_line) == set(good_lines) | set(reasons)
    for number, obj in good_lines.items():
        result = by_line[number]
        assert result["status"] == "ok", result
        assert result["id"] == line_id(obj, number)
        assert result["response"] == expected_answer(sent_message(obj))
    assert by_line[next(n for n, o in good_lines.items() if o.get("custom_id") == "extra")][
        "metadata"
    ] == {"note": "kept", "body": {"temperature": 0}}
    for number, reason in reasons.items():
        result = by_line[number]
        assert result["status"] == "error"
        assert result["error"]["kind"] == INVALID_INPUT
        assert reason in result["error"]["message"], (number, result)
        assert result["attempts"] == 0
    duplicate = next(by_line[n] for n, r in reasons.items() if r.startswith("duplicate"))
    assert duplicate["id"] is None
    assert "first on line 1" in duplicate["error"]["message"]
    stats = emulator.stats
    assert set(stats.answered) == {sent_message(obj) for obj in good_lines.values()}
    assert stats.posts == len(good_lines)
    assert f"{len(good_lines)} ok, {len(reasons)} errors (invalid_input {len(reasons)})" in (
        done.stderr
    )
