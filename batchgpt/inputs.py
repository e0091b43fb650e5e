"""Stream a prompt file: one item per line to process, in memory that does not grow with prompts.

Lines end at `\\n` (a `\\r` before it is dropped); a UTF-8 BOM is ignored; blank lines are skipped.
Lines already done (by number) are skipped without parsing. Duplicate ids are found with an
`IdIndex` of 63-bit id hashes, about 12 bytes per id, so a million-line file costs ~25 MB.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batchgpt.errors import file_errors
from batchgpt.records import Id, InvalidLine, ModelCheck, PromptRecord, id_key, parse_line

BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
_CHUNK = 1024 * 1024


_KEY_BITS = (1 << 63) - 1


def index_key(record_id: Id) -> int:
    """An `IdIndex` key: a nonzero 63-bit hash of the id's text (5 and "5" are one id). Python's
    own string hash, a third of `id_key`'s cost, is enough for an index that lives in one process;
    shards, which must agree across processes, use `id_key`."""
    return (hash(str(record_id)) & _KEY_BITS) | 1


class IdIndex:
    """id hash → first line number, as an open-addressing table in two flat arrays.

    A Python dict of a million ints costs ~120 MB; this costs ~25 MB, which keeps a million-line
    run under its memory target. Keys are `index_key` values (never 0, which marks a free slot).
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
        """Twice the slots, every entry placed again (the keys are distinct: no lookups)."""
        entries = [(key, line) for key, line in zip(self._keys, self._lines, strict=True) if key]
        self.__init__(2 * len(self._keys))  # type: ignore[misc]
        keys, lines, mask = self._keys, self._lines, self._mask
        for key, line in entries:
            slot = key & mask
            while keys[slot]:
                slot = (slot + 1) & mask
            keys[slot] = key
            lines[slot] = line
        self._size = len(entries)


class LineSet:
    """A set of line numbers as a bitmap: 1 bit per line."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, line: int) -> bool:
        """Add `line`; False when it was there already."""
        index, bit = divmod(line, 8)
        bits = self._bits
        if index >= len(bits):
            bits.extend(bytes(max(index + 1 - len(bits), len(bits))))
        if bits[index] >> bit & 1:
            return False
        bits[index] |= 1 << bit
        self.count += 1
        return True

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
        if shard is not None and not shard.owns(id_key(number if item.id is None else item.id)):
            continue
        if item.id is not None:
            first = seen.setdefault(index_key(item.id), number)
            if first != number:
                yield InvalidLine(None, number, f"duplicate id {item.id!r} (first on line {first})")
                continue
        yield item
