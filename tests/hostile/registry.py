"""The registry of every entry point that reads user files; `test_hostile.py` feeds each one the corpus.

A reader joins by registering in a `tests/hostile/entries_*.py` module:

```python
from tests.hostile.registry import register

register(
    name="wbdc.load",                       # unique, "<area>.<what>"
    module="vmmlib.data.wbdc.reader",              # the module whose reading this covers (coverage test)
    make=lambda d: write_small_valid_input(d),   # a VALID input under the empty folder d; returns what call takes
    targets={"annotations.json": "json", "feeds.csv": "csv"},  # files to mutate, relative to make()'s return
    call=lambda p: load(p),                 # the entry point on the (mutated) input
    handled={"duplicate_ids": "later rows of the same id are summed, as the official scorer does"},
    skip={"path_climb": "no path-valued field"},
)
```

For every target and every mutation of its kind (see `corpus.MUTATIONS`) the call must raise
`vmmlib.io.safe.InputError` naming the mutated file (or a path inside the made folder), or return
normally when the mutation is in `handled`; anything else fails, and so does a peak RSS over the bound.
Keys of `handled` and `skip` are a mutation name ("bom") or a mutation at one target
("bom@annotations.json"). The unmutated input must be accepted (the "valid" case).

Targets may name a member of a zip: "feats.zip!a.json" mutates member a.json of feats.zip as JSON.
`hook(entry_name, mutation)` replaces a corpus mutation for one entry (e.g. where ids or paths live).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Entry:
    name: str  # "wbdc.load", "validate.qqbrowser", "pipeline.load", ...
    module: str  # the vmmlib module whose reading this covers, e.g. "vmmlib.data.wbdc.reader"
    make: Callable[
        [Path], Path
    ]  # writes a VALID input under the given empty folder; returns what `call` takes
    targets: dict[str, str]  # file to mutate, relative to make()'s return ("" = that path itself) -> kind:
    #   "json" "jsonl" "csv" "tsv" "text" "yaml" "zip" "npy" "image" "tfrecord"
    call: Callable[[Path], object]  # runs the entry point on the (mutated) input
    handled: dict[str, str] = field(default_factory=dict)  # mutation name -> documented behaviour when
    # the entry accepts that mutation instead of raising InputError
    skip: dict[str, str] = field(default_factory=dict)  # mutation name -> why it does not apply


ENTRIES: list[Entry] = []

# (entry name, mutation name) -> fn(target_path, made_root) -> None, used instead of the corpus's own.
HOOKS: dict[tuple[str, str], Callable[[Path, Path], None]] = {}

# entry name -> its bound on one case's peak RSS growth in MB (default runner.RSS_BOUND_MB), e.g. a
# tight one for an entry whose valid case is a memory check.
RSS_BOUNDS_MB: dict[str, int] = {}


def register(**kwargs) -> Entry:
    """Append `Entry(**kwargs)` to ENTRIES and return it; names must be unique."""
    entry = Entry(**kwargs)
    if any(e.name == entry.name for e in ENTRIES):
        raise ValueError(f"entry {entry.name!r} registered twice")
    ENTRIES.append(entry)
    return entry


def hook(entry_name: str, mutation: str):
    """Decorator: `fn(target_path, made_root)` performs `mutation` for this entry (ids, path fields...)."""

    def add(fn: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
        HOOKS[(entry_name, mutation)] = fn
        return fn

    return add
