"""MUGE retrieval submission: jsonl, one query a line with its top-10 predicted ids (SPEC §1.3, §2.4, §9.2).

    {"text_id": 123, "image_ids": [9, 4, ...]}        Chinese-CLIP's evaluator (text → image)
    {"query_id": 123, "item_ids": [9, 4, ...]}        Tianchi MUGE's key names (Online-CNCLIP writes these)
    {"image_id": 9, "text_ids": [123, ...]}           image → text (`evaluation_tr.py`)

The official `evaluation.py` refuses: a line that is not JSON (a blank line included), a missing
id or list key, an id that is not an int, a list that is not a list of exactly 10 ints, a list
with duplicates, a reference query with no line. What it silently accepts and we refuse: `true` /
`false` (a bool passes its `isinstance(x, int)`), a query id repeated on a second line (the last
wins upstream), ids that are not reference queries, and key conventions mixed within one file.
Problems are reported one line per kind, with the count and the first line number.

Scores (`evaluate`) are the official ones, in percent as the evaluator prints them: `score` =
`mean_recall` = (R@1 + R@5 + R@10) / 3 × 100, and `r1`, `r5`, `r10`.

No torch here: `vmm validate muge` answers at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from vmmlib.io.safe import InputError, check_name, iter_jsonl, iter_lines, parse_json
from vmmlib.metrics.muge import recall_at_k, transpose_truth
from vmmlib.submissions import InvalidSubmissionError

K = 10
CONVENTIONS = {  # first key → (query key, list key)
    "text_id": ("text_id", "image_ids"),
    "query_id": ("query_id", "item_ids"),
    "image_id": ("image_id", "text_ids"),
}
DEFAULT_SPLIT = "valid"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def write(
    path: str | Path,
    text_ids: Sequence[int],
    image_ids_top10: Sequence[Sequence[int]],
    *,
    keys: str = "text_id",
) -> Path:
    """Write predictions: one line per query, its 10 ranked ids.

    Args:
        text_ids: (Q,) unique query ids (text ids; image ids for `keys="image_id"`).
        image_ids_top10: (Q, 10) ranked predicted ids per query, no repeats within a row.
        keys: "text_id" (Chinese-CLIP), "query_id" (Tianchi), or "image_id" (image → text).
    """
    if keys not in CONVENTIONS:
        raise ValueError(f"unknown keys {keys!r}; valid choices: {', '.join(CONVENTIONS)}")
    query_key, list_key = CONVENTIONS[keys]
    if len(text_ids) != len(image_ids_top10):
        raise ValueError(f"{len(text_ids)} query ids but {len(image_ids_top10)} prediction rows")
    if len(set(text_ids)) != len(text_ids):
        raise ValueError("query ids repeat: one line per query")
    lines = []
    for query, row in zip(text_ids, image_ids_top10):
        row = [int(x) for x in row]
        if len(row) != K or len(set(row)) != K:
            raise ValueError(f"query {query}: needs {K} distinct ids, got {row}")
        lines.append(json.dumps({query_key: int(query), list_key: row}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class _Problems:
    """Problems grouped by kind: count and first example (line number and detail)."""

    def __init__(self):
        self.kinds: dict[str, list] = {}

    def add(self, kind: str, line_no: int | None, detail: str) -> None:
        entry = self.kinds.setdefault(kind, [0, line_no, detail])
        entry[0] += 1

    def lines(self) -> list[str]:
        out = []
        for kind, (count, line_no, detail) in self.kinds.items():
            where = f"line {line_no}: " if line_no is not None else ""
            out.append(f"{kind}: {count} time(s), first {where}{detail}")
        return out


def _check_line(obj, line_no: int, keys: tuple[str, str], problems: _Problems):
    """(query id, ranked list) of one parsed line; the list is None when only it is invalid, the whole
    result None when the query id is."""
    query_key, list_key = keys
    if not isinstance(obj, dict) or query_key not in obj:
        problems.add(f"line without {query_key}", line_no, str(obj)[:80])
        return None
    query, ranked = obj[query_key], obj.get(list_key)
    if not _is_int(query):
        problems.add(f"{query_key} not an int", line_no, repr(query)[:80])
        return None
    if not isinstance(ranked, list):
        problems.add(f"{list_key} missing or not a list", line_no, f"{query_key} {query}")
        return query, None
    if len(ranked) != K:
        problems.add(f"not {K} {list_key}", line_no, f"{query_key} {query} has {len(ranked)}")
    elif not all(_is_int(x) for x in ranked):
        problems.add(f"{list_key} not all ints", line_no, f"{query_key} {query}: {ranked}"[:100])
    elif len(set(ranked)) != K:
        problems.add(f"duplicate {list_key}", line_no, f"{query_key} {query}: {ranked}")
    else:
        return query, ranked
    return query, None


def load(
    path: str | Path, required_ids: Iterable[int] | None = None
) -> tuple[dict[int, list[int]], list[str], str | None]:
    """Parse and check a submission. Returns (predictions, problems, key convention found)."""
    path, problems, predictions, present = Path(path), _Problems(), {}, set()
    if not path.is_file():
        return {}, [f"submission file {path} not found"], None
    convention = None
    try:
        for line_no, line in iter_lines(path, what="submission"):
            try:
                obj = parse_json(line.strip(), path, where=f"line {line_no}")
            except InputError:
                problems.add("line is not JSON", line_no, repr(line.strip()[:80]))
                continue
            found = next((k for k in CONVENTIONS if isinstance(obj, dict) and k in obj), None)
            convention = convention or found
            if found is not None and found != convention:
                problems.add("mixed key conventions", line_no, f"{found} after {convention}")
                continue
            parsed = _check_line(obj, line_no, CONVENTIONS[convention or "text_id"], problems)
            if parsed is None:
                continue
            query, ranked = parsed
            if query in present:
                problems.add("query on more than one line", line_no, f"{query}")
                continue
            present.add(query)
            if ranked is not None:
                predictions[query] = ranked
    except InputError as e:  # not UTF-8, or a line too long to be a prediction: named, reading stops
        problems.add("unreadable line", None, str(e))
    if not predictions and not problems.kinds:
        problems.add("empty submission", None, str(path))
    if required_ids is not None:
        required = set(required_ids)
        missing = sorted(required - present)  # a query whose line is invalid is reported once, above
        unknown = sorted(present - required)
        if missing:
            problems.add(
                "reference queries without a line", None, f"{len(missing)} missing, e.g. {missing[:5]}"
            )
        if unknown:
            problems.add("ids that are not reference queries", None, f"{len(unknown)}, e.g. {unknown[:5]}")
    return predictions, problems.lines(), convention


def read(path: str | Path) -> dict[int, list[int]]:
    """{query id: 10 ranked ids} of a valid file; InvalidSubmissionError (with the problems) otherwise."""
    predictions, problems, _ = load(path)
    if problems:
        raise InvalidSubmissionError(path, problems)
    return predictions


def validate(path: str | Path, required_ids: Iterable[int] | None = None) -> list[str]:
    """Problems with a submission, one line per kind (empty: valid); None `required_ids` checks the format only."""
    return load(path, required_ids)[1]


def read_truth(path: str | Path) -> dict[int, list[int]]:
    """A reference jsonl → {query id: ground-truth ids}: `{split}_texts.jsonl` (text_id → image_ids) or
    its transposed `.tr.jsonl` (image_id → text_ids). Raises InputError naming the line of a bad one."""
    return _read_truth(path)[1]


def _read_truth(path: str | Path) -> tuple[str | None, dict[int, list[int]]]:
    """(query key of the file: "text_id" or "image_id", {query id: ground-truth ids})."""
    truth: dict[int, list[int]] = {}
    first_key = None
    for line_no, obj in iter_jsonl(path, what="reference file"):
        where = f"line {line_no}"
        key = "text_id" if isinstance(obj, dict) and "text_id" in obj else "image_id"
        list_key = "image_ids" if key == "text_id" else "text_ids"
        if not isinstance(obj, dict) or key not in obj or list_key not in obj:
            raise InputError(
                path, f"not a reference line: expected {{{key!r}: id, {list_key!r}: [ids]}}", where
            )
        query, values = obj[key], obj[list_key]
        if not _is_int(query) or not isinstance(values, list) or not all(_is_int(v) for v in values):
            raise InputError(path, f"not a reference line: {key} and {list_key} must be integers", where)
        first_key = first_key or key
        if key != first_key:
            raise InputError(path, f"{key} in a file of {first_key}s", where)
        if query in truth:
            raise InputError(path, f"{key} {query} repeated", where)
        truth[query] = values
    return first_key, truth


def required_ids(*, truth=None, data_dir=None, split: str | None = None) -> list[int] | None:
    """The query ids a valid submission holds: those of `truth` (a jsonl), or of
    `data_dir/{split}_texts.jsonl` (split default "valid"); None when neither is given."""
    if truth is None and data_dir is None:
        return None
    split = check_name(split or DEFAULT_SPLIT, "split")
    path = Path(truth) if truth is not None else Path(data_dir) / f"{split}_texts.jsonl"
    return list(read_truth(path))


def evaluate(pred: str | Path, truth: str | Path) -> dict[str, float]:
    """Validate `pred` against the reference, then score it as the official evaluator does.

    A text→image file (text_id or query_id keys) is scored against `{split}_texts.jsonl`; an
    image→text file (image_id keys) against the transposed annotation (built from the texts file,
    or read from a `.tr.jsonl`).

    Returns:
        {"score", "mean_recall", "r1", "r5", "r10"} in percent.

    Raises:
        InvalidSubmissionError: listing every problem (nothing is scored then).
    """
    truth_key, reference = _read_truth(truth)
    if not reference:
        raise InputError(truth, "no reference lines")
    _, _, convention = load(pred)
    truth_is_t2i = truth_key == "text_id"
    if convention == "image_id" and truth_is_t2i:
        reference = transpose_truth(reference)
    elif convention in ("text_id", "query_id") and not truth_is_t2i:
        raise InputError(truth, f"an image→text annotation, but {pred} ranks images per text")
    predictions, problems, _ = load(pred, reference)
    if problems:
        raise InvalidSubmissionError(pred, problems)
    scores = recall_at_k(predictions, reference)
    percent = {k: 100.0 * v for k, v in scores.items()}
    return {"score": percent["mean_recall"], **percent}
