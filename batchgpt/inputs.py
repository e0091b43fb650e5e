"""Stream a prompt file: one item per line to process, in memory that does not grow with prompts.

Lines end at `\\n` (a `\\r` before it is dropped); a UTF-8 BOM is ignored; blank lines are skipped.
Lines already done (by number) are skipped without parsing. Duplicate ids are found with an
`IdIndex` of 64-bit id hashes, about 12 bytes per id, so a million-line file costs ~25 MB.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batchgpt.errors import file_errors
from batchgpt.records import InvalidLine, ModelCheck, PromptRecord, id_key, parse_line

BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
_CHUNK = 1024 * 1024


class IdIndex:
    """id hash → first line number, as an open-addressing table in two flat arrays.

    A Python dict of a million ints costs ~120 MB; this costs ~25 MB, which keeps a million-line
    run under its memory target. Keys are `id_key` values (never 0, which marks a free slot).
    """

    def __init__(self, capacity: int = 1 << 10) -> None:
        self._keys = array("Q", bytes(8 * capacity))
        self._lines = array("I", bytes(4 * capacity))
        self._mask = capacity - 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def setdefault(self, key: int, line: int) -> int:
        """The line recorded for `key`; records `line` first when the key is new."""
        keys, mask = self._keys, self._mask
        slot = key & mask
        while (found := keys[slot]) != 0:
            if found == key:
                return self._lines[slot]
            slot = (slot + 1) & mask
        keys[slot] = key
        self._lines[slot] = line
        self._size += 1
        if 2 * self._size > mask:
            self._grow()
        return line

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        self.__init__(2 * len(old_keys))  # type: ignore[misc]
        for key, line in zip(old_keys, old_lines, strict=True):
            if key:
                self.setdefault(key, line)


class LineSet:
    """A set of line numbers as a bitmap: 1 bit per line."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, line: int) -> None:
        index, bit = divmod(line, 8)
        if index >= len(self._bits):
            self._bits.extend(bytes(max(index + 1 - len(self._bits), len(self._bits))))
        if not self._bits[index] >> bit & 1:
            self._bits[index] |= 1 << bit
            self.count += 1

    def __contains__(self, line: object) -> bool:
        if not isinstance(line, int):
            return False
        index, bit = divmod(line, 8)
        return index < len(self._bits) and bool(self._bits[index] >> bit & 1)


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count`: the lines whose id hash modulo `count` is `index`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`K/N` with 0 <= K < N."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like K/N (e.g. 0/3), not {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard {text!r} needs 0 <= K < N")
        return cls(index, count)

    def owns(self, key: int) -> bool:
        return (key >> 1) % self.count == self.index  # bit 0 of an id_key is always set

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def physical_lines(
    path: Path, max_line_bytes: int, size: int | None = None
) -> Iterator[tuple[int, bytes | None]]:
    """(line number, content without its line end), or None content for an over-long line;
    no further than `size` bytes when given (the part of the file a run fingerprinted)."""
    with file_errors("read", path), path.open("rb") as stream:
        left = sys.maxsize if size is None else size
        # Skip the BOM before reading lines, so it never counts against the first line's limit.
        if left >= len(BOM) and stream.read(len(BOM)) == BOM:
            left -= len(BOM)
        else:
            stream.seek(0)
        number = 0
        while raw := stream.readline(min(max_line_bytes + 2, left)):
            left -= len(raw)
            number += 1
            if not raw.endswith(b"\n") and len(raw) > max_line_bytes:
                while (rest := stream.readline(min(_CHUNK, left))) and not rest.endswith(b"\n"):
                    left -= len(rest)
                left -= len(rest)
                yield number, None
                continue
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            yield number, raw if len(raw) <= max_line_bytes else None


def read_prompts(
    path: Path,
    *,
    default_model: str,
    check_model: ModelCheck,
    seen: IdIndex,
    done: LineSet | None = None,
    shard: Shard | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    size: int | None = None,
) -> Iterator[PromptRecord | InvalidLine]:
    """Every line of `path` this run must handle: prompts to send and invalid lines to record;
    only its first `size` bytes when given."""
    for number, raw in physical_lines(path, max_line_bytes, size):
        if done is not None and number in done:
            continue
        if raw is None:
            if shard is None or shard.owns(id_key(number)):
                yield InvalidLine(None, number, f"line is longer than {max_line_bytes} bytes")
            continue
        if not raw.strip():
            continue
        item = parse_line(raw, number, default_model, check_model)
        key = id_key(number if item.id is None else item.id)
        if shard is not None and not shard.owns(key):
            continue
        if item.id is not None:
            first = seen.setdefault(key, number)
            if first != number:
                yield InvalidLine(None, number, f"duplicate id {item.id!r} (first on line {first})")
                continue
        yield item
