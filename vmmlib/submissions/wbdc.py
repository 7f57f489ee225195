"""WBDC 2022 submission: `result.csv`, one `id,category_id` line per test video, no header (SPEC §1.2).

The official checker (`evaluate.py`, SPEC §9.1) splits each line on ',', raises on an id that is not
in the ground truth and on a line-count mismatch, lets a duplicate id pass when another id is
missing, crashes with a KeyError on an unknown category id, and fails on a header line. `validate`
reports all of these (and duplicates, which the official one misses) as readable problems;
`evaluate` validates first, then scores with the official F1-mean (`vmmlib.metrics.wbdc`).

Truth is `annotations/labeled.json` (or any annotation JSON with `category_id`), or the organisers'
`id,category_id` CSV. No torch is imported here.

`validate` streams the file line by line and counts ids with `_ids.IdCounter`, so a 200 MB
`result.csv` costs tens of MB, not the ~13× its size a whole-file read took. Bytes that are not
UTF-8 are a problem (the official reader fails on them), named by line.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vmmlib.io.safe import InputError, check_file, check_name, read_json
from vmmlib.io.wbdc_categories import CATEGORY_IDS, categories_to_lv2, is_category, lv2_to_category
from vmmlib.metrics.wbdc import f1_mean
from vmmlib.submissions import InvalidSubmissionError
from vmmlib.submissions._ids import IdCounter

FILE_NAME = "result.csv"
DEFAULT_SPLIT = "test_a"
_MAX_LISTED = 5
_MAX_LINE_BYTES = 1 << 20  # a line is ~16 bytes; anything this long is not a submission
_MAX_LINE_PROBLEMS = 100  # malformed lines listed one by one; the rest counted in one line


def _category_strings(category_ids: Sequence) -> list[str]:
    """'LLSS' strings as given, or lv2 ids (ints 0…199) turned into 'LLSS'."""
    out = []
    for c in category_ids:
        if isinstance(c, (int, np.integer)):
            out.append(lv2_to_category(int(c)))
        elif isinstance(c, str) and is_category(c):
            out.append(c)
        else:
            raise ValueError(f"bad category {c!r}: give 'LLSS' strings from CATEGORY_IDS or lv2 ids 0..199")
    return out


def write(path: str | Path, ids: Sequence[str], category_ids: Sequence) -> Path:
    """Write `result.csv`: `id,category_id` per line, no header, in the order given.

    Args:
        ids: video ids (strings, unique).
        category_ids: per id, a category string 'LLSS' or an lv2 id (int 0…199).

    Returns:
        The path written.
    """
    ids = [str(v) for v in ids]
    if len(ids) != len(category_ids):
        raise ValueError(f"{len(ids)} ids but {len(category_ids)} categories")
    dup = [v for v, n in Counter(ids).items() if n > 1]
    if dup:
        raise ValueError(f"{len(dup)} duplicate id(s), e.g. {dup[0]}")
    bad = [v for v in ids if not v or "," in v or v != v.strip()]
    if bad:
        raise ValueError(f"id {bad[0]!r} cannot be written to a comma-separated line")
    cats = _category_strings(category_ids)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{v},{c}\n" for v, c in zip(ids, cats)), encoding="utf-8")
    return path


def read(path: str | Path) -> dict[str, str]:
    """`result.csv` → {id: category_id} in file order.

    Raises:
        InvalidSubmissionError: (a ValueError) listing the malformed lines (file:line: why).
    """
    rows, problems = _parse(path)
    if problems:
        raise InvalidSubmissionError(path, problems)
    return dict(rows)


def _parse(path: str | Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Lines → (id, category) rows and the problems of malformed lines (`path:line: ...`)."""
    problems: list[str] = []
    rows = list(_rows(path, problems))
    return rows, problems


def _rows(path: str | Path, problems: list[str]) -> Iterator[tuple[str, str]]:
    """(id, category) of each well-formed line, streamed; malformed lines go to `problems`."""
    malformed = 0

    def problem(text: str) -> None:
        nonlocal malformed
        malformed += 1
        if malformed <= _MAX_LINE_PROBLEMS:
            problems.append(text)

    for n, line in _lines(path, problem):
        if n == 1 and line.startswith("\ufeff"):
            problems.append(
                f"{path}: starts with a UTF-8 byte-order mark; the official reader keeps it in the first id"
            )
            line = line[1:]
        fields = line.strip().split(",")
        if len(fields) != 2 or not fields[0]:
            what = "an empty line" if not line.strip() else f"{line[:60]!r}"
            problem(f"{path}:{n}: expected 'id,category_id', got {what}")
            continue
        if n == 1 and not is_category(fields[1]) and not fields[1].isdigit():
            problem(f"{path}:1: header line {line.strip()!r}; result.csv has no header")
            continue
        yield fields[0], fields[1]
    if malformed > _MAX_LINE_PROBLEMS:
        problems.append(f"{path}: … and {malformed - _MAX_LINE_PROBLEMS} more malformed line(s)")


def _lines(path: str | Path, problem) -> Iterator[tuple[int, str]]:
    """(number, text) of each line as `str.splitlines` numbers them, read a block of lines at a time.

    A line that is not UTF-8 is reported through `problem` and decoded with U+FFFD; a line over
    `_MAX_LINE_BYTES` ends the file with a problem.
    """
    p = check_file(path, what="submission")
    n, rest = 0, b""
    with open(p, "rb") as f:
        while True:
            chunk = f.read(_MAX_LINE_BYTES)
            block = rest + chunk
            cut = len(block) if not chunk else block.rfind(b"\n") + 1  # whole lines only, until the end
            if not block:
                return
            if cut == 0:
                if len(block) > _MAX_LINE_BYTES:
                    problem(f"{path}:{n + 1}: a line longer than {_MAX_LINE_BYTES:,} bytes; not a result.csv")
                    return
                rest = block
                continue
            block, rest = block[:cut], block[cut:]
            for text, bad_byte in _decoded(block):
                if bad_byte is not None:
                    problem(
                        f"{path}:{n + 1}: not valid UTF-8 (byte 0x{bad_byte:02x}); the official reader fails"
                    )
                for part in text.splitlines():
                    n += 1
                    yield n, part
            if not chunk:
                return


def _decoded(block: bytes) -> Iterator[tuple[str, int | None]]:
    """(text, None) for a block that is UTF-8; else (line, first bad byte or None) line by line, a
    bad line decoded with U+FFFD."""
    try:
        yield block.decode("utf-8"), None
        return
    except UnicodeDecodeError:
        pass
    pieces = block.split(b"\n")
    for k, piece in enumerate(pieces, 1):
        raw = piece + b"\n" if k < len(pieces) else piece
        try:
            yield raw.decode("utf-8"), None
        except UnicodeDecodeError as e:
            yield raw.decode("utf-8", errors="replace"), raw[e.start]


def _listed(items: list[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    more = f", … ({total} in all)" if total > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def validate(path: str | Path, required_ids: Sequence[str] | None = None) -> list[str]:
    """Problems with a `result.csv`; [] means valid.

    Checks: readable file, one `id,category_id` per line, no header, no blank lines, every category
    one of the 200, no duplicate id, and with `required_ids`: no unknown id and none missing.
    Streams the file: memory is bounded whatever its size.
    """
    path = Path(path)
    if not path.is_file():
        return [f"{path}: no such file"]
    problems: list[str] = []
    required = None if required_ids is None else dict.fromkeys(str(v) for v in required_ids)
    bad, n_bad, n_rows, seen = [], 0, 0, set()
    with IdCounter() as ids:
        for v, c in _rows(path, problems):
            n_rows += 1
            if not is_category(c):
                n_bad += 1
                if len(bad) < _MAX_LISTED:
                    bad.append(f"{v}:{c!r}")
            ids.add(v)
            if required is not None and v in required:
                seen.add(v)
        dup, n_dup, unknown, n_unknown = _dup_and_unknown(ids, required)
    if n_bad:
        problems.append(
            f"{n_bad} line(s) with an unknown category id ({_listed(bad, n_bad)}); "
            f"valid: the 200 'LLSS' ids {CATEGORY_IDS[0]}…{CATEGORY_IDS[-1]}"
        )
    if n_dup:
        problems.append(f"{n_dup} duplicate id(s): {_listed(dup, n_dup)}")
    if required is not None:
        missing = [v for v in required if v not in seen]
        if n_unknown:
            problems.append(f"{n_unknown} id(s) not in the test set: {_listed(unknown, n_unknown)}")
        if missing:
            problems.append(f"{len(missing)} required id(s) missing: {_listed(missing)}")
        if not n_rows and not required:
            problems.append("no videos to score")
    elif not n_rows:
        problems.append(f"{path}: no predictions")
    return problems


def _dup_and_unknown(ids: IdCounter, required: dict | None) -> tuple[list[str], int, list[str], int]:
    """The first few repeated and unknown ids in order of first appearance, and how many of each."""
    dup, unknown, n_dup, n_unknown = [], [], 0, 0
    for c in ids.counts():
        if c.repeats:
            n_dup += 1
            dup.append((c.first, c.key))
        if required is not None and c.key not in required:
            n_unknown += 1
            unknown.append((c.first, c.key))
        if len(dup) > 4 * _MAX_LISTED:
            dup = heapq.nsmallest(_MAX_LISTED, dup)
        if len(unknown) > 4 * _MAX_LISTED:
            unknown = heapq.nsmallest(_MAX_LISTED, unknown)
    first = [k for _, k in heapq.nsmallest(_MAX_LISTED, dup)]
    return first, n_dup, [k for _, k in heapq.nsmallest(_MAX_LISTED, unknown)], n_unknown


def read_truth(path: str | Path) -> dict[str, str]:
    """Ground truth {id: category_id}: an annotation JSON array (entries without `category_id` are
    skipped) or the organisers' `id,category_id` CSV."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        truth = read(path)
        bad = next((v for v, c in truth.items() if not is_category(c)), None)
        if bad is not None:
            raise InputError(path, f"id {bad}: unknown category id {truth[bad]!r}")
        return truth
    truth: dict[str, str] = {}
    for k, entry in enumerate(_annotations(path)):
        category = entry.get("category_id")
        if category is None:
            continue
        vid = str(entry["id"])
        if not isinstance(category, str) or not is_category(category):
            raise InputError(path, f"unknown category id {category!r}"[:200], f"entry {k} (id {vid})")
        truth[vid] = category
    return truth


def _annotations(path: Path) -> list[dict]:
    """The entries of an annotation JSON array: objects with a string or integer `id`."""
    entries = read_json(path, what="annotation file")
    if not isinstance(entries, list):
        raise InputError(path, "expected a JSON array of annotation objects")
    seen = set()
    for k, e in enumerate(entries):
        if not isinstance(e, dict):
            raise InputError(path, f"an annotation must be an object, got {type(e).__name__}", f"entry {k}")
        vid = e.get("id")
        if isinstance(vid, bool) or not isinstance(vid, (str, int)) or str(vid) == "":
            raise InputError(path, f"'id' must be a non-empty string, got {vid!r}"[:200], f"entry {k}")
        if str(vid) in seen:
            raise InputError(path, f"id {vid} appears twice", f"entry {k}")
        seen.add(str(vid))
    return entries


def required_ids(
    *, truth: str | Path | None = None, data_dir: str | Path | None = None, split: str | None = None
) -> list[str] | None:
    """The ids a submission must cover: those of a truth file, or of `data_dir/annotations/{split}.json`
    (split default test_a); None when neither is given."""
    if truth:
        return list(read_truth(truth))
    if not data_dir:
        return None
    split = check_name(split or DEFAULT_SPLIT, "split")
    path = Path(data_dir) / "annotations" / f"{split}.json"
    if not path.is_file():
        raise InputError(path, f"not found: split must name a file in {Path(data_dir) / 'annotations'}")
    return [str(e["id"]) for e in _annotations(path)]


def evaluate(pred: str | Path, truth: str | Path) -> dict[str, float]:
    """Validate `pred` against the truth's ids, then the official scores.

    Returns:
        {"lv1_acc", "lv2_acc", "lv1_f1_micro", "lv1_f1_macro", "lv2_f1_micro", "lv2_f1_macro",
        "mean_f1", "videos"}.

    Raises:
        InvalidSubmissionError: (a ValueError) listing every problem `validate` finds.
    """
    gold = read_truth(truth)
    problems = validate(pred, list(gold))
    if problems:
        raise InvalidSubmissionError(pred, problems)
    submitted = read(pred)
    ids = list(gold)
    scores = f1_mean(categories_to_lv2(gold[v] for v in ids), categories_to_lv2(submitted[v] for v in ids))
    return {**scores, "videos": float(len(ids))}
