"""WBDC 2022 submission: `result.csv`, one `id,category_id` line per test video, no header (SPEC §1.2).

The official checker (`evaluate.py`, SPEC §9.1) splits each line on ',', raises on an id that is not
in the ground truth and on a line-count mismatch, lets a duplicate id pass when another id is
missing, crashes with a KeyError on an unknown category id, and fails on a header line. `validate`
reports all of these (and duplicates, which the official one misses) as readable problems;
`evaluate` validates first, then scores with the official F1-mean (`vmmlib.metrics.wbdc`).

Truth is `annotations/labeled.json` (or any annotation JSON with `category_id`), or the organisers'
`id,category_id` CSV. No torch is imported here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vmmlib.data.wbdc_categories import CATEGORY_IDS, categories_to_lv2, is_category, lv2_to_category
from vmmlib.metrics.wbdc import f1_mean
from vmmlib.submissions import InvalidSubmissionError

FILE_NAME = "result.csv"
DEFAULT_SPLIT = "test_a"
_MAX_LISTED = 5


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
    rows, problems = [], []
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        problems.append(
            f"{path}: starts with a UTF-8 byte-order mark; the official reader keeps it in the first id"
        )
        text = text[1:]
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.strip().split(",")
        if len(fields) != 2 or not fields[0]:
            what = "an empty line" if not line.strip() else f"{line[:60]!r}"
            problems.append(f"{path}:{n}: expected 'id,category_id', got {what}")
            continue
        if n == 1 and not is_category(fields[1]) and not fields[1].isdigit():
            problems.append(f"{path}:1: header line {line.strip()!r}; result.csv has no header")
            continue
        rows.append((fields[0], fields[1]))
    return rows, problems


def _listed(items: list[str]) -> str:
    more = f", … ({len(items)} in all)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def validate(path: str | Path, required_ids: Sequence[str] | None = None) -> list[str]:
    """Problems with a `result.csv`; [] means valid.

    Checks: readable file, one `id,category_id` per line, no header, no blank lines, every category
    one of the 200, no duplicate id, and with `required_ids`: no unknown id and none missing.
    """
    path = Path(path)
    if not path.is_file():
        return [f"{path}: no such file"]
    rows, problems = _parse(path)
    bad = [f"{v}:{c!r}" for v, c in rows if not is_category(c)]
    if bad:
        problems.append(
            f"{len(bad)} line(s) with an unknown category id ({_listed(bad)}); "
            f"valid: the 200 'LLSS' ids {CATEGORY_IDS[0]}…{CATEGORY_IDS[-1]}"
        )
    counts = Counter(v for v, _ in rows)
    dup = [v for v, n in counts.items() if n > 1]
    if dup:
        problems.append(f"{len(dup)} duplicate id(s): {_listed(dup)}")
    if required_ids is not None:
        required = dict.fromkeys(str(v) for v in required_ids)
        unknown = [v for v in counts if v not in required]
        missing = [v for v in required if v not in counts]
        if unknown:
            problems.append(f"{len(unknown)} id(s) not in the test set: {_listed(unknown)}")
        if missing:
            problems.append(f"{len(missing)} required id(s) missing: {_listed(missing)}")
        if not rows and not required:
            problems.append("no videos to score")
    elif not rows:
        problems.append(f"{path}: no predictions")
    return problems


def read_truth(path: str | Path) -> dict[str, str]:
    """Ground truth {id: category_id}: an annotation JSON array (entries without `category_id` are
    skipped) or the organisers' `id,category_id` CSV."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON array of annotation objects")
        return {str(e["id"]): str(e["category_id"]) for e in entries if e.get("category_id") is not None}
    return read(path)


def required_ids(
    *, truth: str | Path | None = None, data_dir: str | Path | None = None, split: str | None = None
) -> list[str] | None:
    """The ids a submission must cover: those of a truth file, or of `data_dir/annotations/{split}.json`
    (split default test_a); None when neither is given."""
    if truth:
        return list(read_truth(truth))
    if not data_dir:
        return None
    split = split or DEFAULT_SPLIT
    path = Path(data_dir) / "annotations" / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: split must name a file in {Path(data_dir) / 'annotations'}"
        )
    return [str(e["id"]) for e in json.loads(path.read_text(encoding="utf-8"))]


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
