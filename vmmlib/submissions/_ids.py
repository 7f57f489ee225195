"""Exact id bookkeeping for validators in bounded memory: which ids repeat, and where each first appears.

A submission at the size cap can hold tens of millions of short ids (`{"a1":[0],"a2":[0],...}`); a
Python set of them costs ~20× the file. `IdCounter` keeps the first `max_in_memory` distinct ids in
a dict and spills later ones to `buckets` temporary files by hash, then counts each bucket on its
own, so memory stays ~`max_in_memory` ids (~25 MB) + one bucket whatever the file holds, and every answer is
exact (no probabilistic hashing).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple


class IdCount(NamedTuple):
    """One distinct id: where it first appeared, where it first repeated (0-based, in `add` order)
    and how many of its occurrences are repeats.

    An occurrence is a repeat when an earlier occurrence of the same id was valid (`add(key,
    valid=True)`), as a JSON reader keeping the last valid value would see it.
    """

    key: str
    first: int
    repeat: int | None
    repeats: int


class IdCounter:
    """Count ids given one at a time (`add`), then walk every distinct one (`counts`)."""

    def __init__(self, max_in_memory: int = 200_000, buckets: int = 256):
        self.max_in_memory, self.buckets = max_in_memory, buckets
        self.first: dict[str, int] = {}  # id -> ordinal of its first occurrence; ~ordinal if not valid
        self.became_valid: set[str] = set()  # ids first seen invalid, valid later
        self.repeats: dict[str, list[int]] = {}  # id -> [ordinal of the first repeat, number of repeats]
        self.added = 0
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._files: dict[int, IO[str]] = {}

    def add(self, key: str, valid: bool = True) -> None:
        n, self.added = self.added, self.added + 1
        first = self.first.get(key)
        if first is not None:
            _count(key, n, valid, first, self.became_valid, self.repeats)
        elif len(self.first) < self.max_in_memory:
            self.first[key] = n if valid else ~n
        else:
            escaped = key.encode("unicode_escape").decode("ascii")  # one ASCII line, whatever the id holds
            self._spill(hash(key) % self.buckets).write(f"{n} {int(valid)} {escaped}\n")

    def _spill(self, bucket: int) -> IO[str]:
        f = self._files.get(bucket)
        if f is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="vmm-ids-")
            f = self._files[bucket] = open(Path(self._tmp.name) / f"{bucket}.txt", "w+", encoding="ascii")
        return f

    def counts(self, repeated_only: bool = False) -> Iterator[IdCount]:
        """Every distinct id once, or only those that repeat (in-memory ids first, then bucket by
        bucket; not in file order)."""
        yield from _summary(self.first, self.repeats, repeated_only)
        for f in self._files.values():
            f.seek(0)
            first: dict[str, int] = {}
            became_valid: set[str] = set()
            repeats: dict[str, list[int]] = {}
            for line in f:
                n, valid, text = line[:-1].split(" ", 2)
                key, n, valid = text.encode("ascii").decode("unicode_escape"), int(n), valid == "1"
                seen = first.get(key)
                if seen is None:
                    first[key] = n if valid else ~n
                else:
                    _count(key, n, valid, seen, became_valid, repeats)
            yield from _summary(first, repeats, repeated_only)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> IdCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _count(key: str, n: int, valid: bool, first: int, became_valid: set, repeats: dict) -> None:
    """Account one more occurrence (ordinal n) of an id already seen."""
    if first >= 0 or key in became_valid:
        seen = repeats.setdefault(key, [n, 0])
        seen[1] += 1
    elif valid:
        became_valid.add(key)


def _summary(first: dict[str, int], repeats: dict[str, list[int]], repeated_only: bool) -> Iterator[IdCount]:
    if repeated_only:
        for key, (repeat, count) in repeats.items():
            n = first[key]
            yield IdCount(key, n if n >= 0 else ~n, repeat, count)
        return
    for key, n in first.items():
        repeat, count = repeats.get(key, (None, 0))
        yield IdCount(key, n if n >= 0 else ~n, repeat, count)
