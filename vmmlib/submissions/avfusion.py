"""avfusion prediction files: text→video rankings or video-QA answers, as jsonl or csv.

    {"text_id": 3, "video_ids": ["video00071", "video00065", ...]}    retrieval jsonl: ranked gallery
    text_id,video_ids  →  3,video00071 video00065 ...                  retrieval csv (space-separated)
    {"question_id": 5, "answer": "red"}                                QA jsonl
    question_id,answer →  5,red                                        QA csv

ALPRO (`salesforce/ALPRO@4ff6163`) prints its scores and writes no submission file; these files
carry exactly what its evaluators read. `text_id` is the caption's line number (0-based) in the
retrieval annotation `{"caption", "clip_name"}`; `question_id` the question's line number in the QA
annotation (ALPRO's running counter). Refused, one problem line per kind with its count and first
line: unparsable lines, a missing or non-int id (a bool is not an int), an id on two lines, an empty
or repeated ranking, videos outside the gallery (when the truth is known), a non-string answer,
mixed kinds, and missing or unknown ids.

Scores (`evaluate`), ALPRO's semantics in percent: retrieval R@1/5/10 text→video, with medianR and
meanR (1-indexed) when every line ranks the whole gallery (a ground truth missing from a shorter
list counts as not found within K); QA overall accuracy and per answer type (SPEC §2.4, §2.5).

`required_ids` returns ("text", id) / ("question", id) pairs: a data folder's split has both kinds,
and a file is checked against those of its own kind. No torch here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vmmlib.io.safe import InputError, check_name, iter_jsonl, iter_lines, parse_json
from vmmlib.metrics.retrieval import qa_accuracy, rank_metrics
from vmmlib.submissions import InvalidSubmissionError

FILE_FORMATS = ("jsonl", "csv")
KINDS = {
    "text_id": ("text", "video_ids"),
    "question_id": ("question", "answer"),
}  # id key → (kind, value key)
DEFAULT_SPLIT = "test"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _write(path: str | Path, id_key: str, value_key: str, ids: Sequence[int], values: Sequence) -> Path:
    if len(ids) != len(values):
        raise ValueError(f"{len(ids)} ids but {len(values)} predictions")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{id_key}s repeat: one line per query")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([id_key, value_key])
        writer.writerows([int(i), " ".join(v) if isinstance(v, list) else v] for i, v in zip(ids, values))
        path.write_text(buf.getvalue(), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps({id_key: int(i), value_key: v}, ensure_ascii=False) + "\n"
                                for i, v in zip(ids, values)), encoding="utf-8")  # fmt: skip
    return path


def write_rankings(path: str | Path, text_ids: Sequence[int], rankings: Sequence[Sequence[str]]) -> Path:
    """Retrieval file (`.jsonl` or `.csv` by the suffix): each caption's video ids, best first, distinct."""
    rows = [[str(v) for v in r] for r in rankings]
    bad = [t for t, r in zip(text_ids, rows) if not r or len(set(r)) != len(r) or any(" " in v for v in r)]
    if bad:
        raise ValueError(f"caption {bad[0]}: a ranking needs distinct video ids without spaces")
    return _write(path, "text_id", "video_ids", text_ids, rows)


def write_answers(path: str | Path, question_ids: Sequence[int], answers: Sequence[str]) -> Path:
    """QA file (`.jsonl` or `.csv` by the suffix): each question's answer string."""
    return _write(path, "question_id", "answer", question_ids, [str(a) for a in answers])


class _Problems:
    def __init__(self):
        self.kinds: dict[str, list] = {}

    def add(self, kind: str, line_no: int | None, detail: str) -> None:
        self.kinds.setdefault(kind, [0, line_no, detail])[0] += 1

    def lines(self) -> list[str]:
        return [
            f"{k}: {n} time(s), first {'' if ln is None else f'line {ln}: '}{d}"
            for k, (n, ln, d) in self.kinds.items()
        ]


def _records(path: Path, problems: _Problems):
    """(line number, dict) of every line of a jsonl or csv file, streamed through vmmlib.io.safe
    (invalid UTF-8, over-long lines and malformed CSV are problems naming the line)."""
    try:
        yield from (_csv_records if path.suffix == ".csv" else _jsonl_records)(path, problems)
    except (InputError, csv.Error) as e:
        problems.add("unreadable file", None, str(e)[:200])


def _csv_records(path: Path, problems: _Problems):
    reader = csv.reader(line + "\n" for _, line in iter_lines(path, what="submission"))
    header = next(reader, [])
    if len(header) != 2 or header[0] not in KINDS:
        problems.add("bad csv header", 1, f"{header} (expected text_id,video_ids or question_id,answer)")
        return
    for row in reader:
        n = reader.line_num
        if len(row) != 2:
            problems.add("csv row without 2 fields", n, str(row)[:80])
            continue
        ident = int(row[0]) if row[0].strip().lstrip("-").isdigit() else row[0]
        value = row[1].split() if header[0] == "text_id" else row[1]
        yield n, {header[0]: ident, header[1]: value}


def _jsonl_records(path: Path, problems: _Problems):
    for n, line in iter_lines(path, what="submission"):
        try:
            obj = parse_json(line, path, where=f"line {n}")
        except InputError:
            problems.add("line is not JSON", n, repr(line[:80]))
            continue
        yield n, obj


def load(path: str | Path, required_ids: Iterable | None = None, gallery: set[str] | None = None):
    """Parse and check a file → (kind, {id: ranking or answer}, problems)."""
    path, problems, found, kind = Path(path), _Problems(), {}, None
    if not path.is_file():
        return None, {}, [f"submission file {path} not found"]
    for n, obj in _records(path, problems):
        key = next((k for k in KINDS if isinstance(obj, dict) and k in obj), None)
        if key is None:
            problems.add("line without text_id or question_id", n, str(obj)[:80])
            continue
        if kind is not None and KINDS[key][0] != kind:
            problems.add("mixed kinds (rankings and answers)", n, key)
            continue
        kind = KINDS[key][0]
        ident, value = obj[key], obj.get(KINDS[key][1])
        if not _is_int(ident):
            problems.add(f"{key} not an int", n, repr(ident)[:80])
        elif ident in found:
            problems.add(f"{key} on more than one line", n, str(ident))
        elif kind == "text" and not _ranking_ok(value, gallery, problems, n):
            found[ident] = None
        elif kind == "question" and not isinstance(value, str):
            problems.add("answer not a string", n, repr(value)[:80])
            found[ident] = None
        else:
            found[ident] = value
    if not found and not problems.kinds:
        problems.add("empty submission", None, str(path))
    if required_ids is not None and kind is not None:
        required = {i for k, i in required_ids if k == kind}
        missing, unknown = sorted(required - set(found)), sorted(set(found) - required)
        if missing:
            problems.add("required ids without a line", None, f"{len(missing)} missing, e.g. {missing[:5]}")
        if unknown:
            problems.add("ids that are not in the annotation", None, f"{len(unknown)}, e.g. {unknown[:5]}")
    return kind, {k: v for k, v in found.items() if v is not None}, problems.lines()


def _ranking_ok(value, gallery, problems: _Problems, n: int) -> bool:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        problems.add("video_ids not a non-empty list of strings", n, repr(value)[:80])
    elif len(set(value)) != len(value):
        problems.add("repeated video ids in a ranking", n, str(value[:5]))
    elif gallery is not None and not set(value) <= gallery:
        problems.add("video ids outside the gallery", n, str(sorted(set(value) - gallery)[:3]))
    else:
        return True
    return False


def read(path: str | Path) -> dict:
    """{text_id: ranked video ids} or {question_id: answer} of a valid file; InvalidSubmissionError otherwise."""
    _, found, problems = load(path)
    if problems:
        raise InvalidSubmissionError(path, problems)
    return found


def validate(path: str | Path, required_ids: Iterable | None = None) -> list[str]:
    """Problems, one line per kind (empty: valid); `required_ids` as `required_ids()` returns them."""
    return load(path, None if required_ids is None else list(required_ids))[2]


_TEXT_KEYS = ("caption", "clip_name", "question", "answer", "answer_type")


def _read_truth(path: Path) -> tuple[str, list[dict]]:
    records = []
    for n, r in iter_jsonl(path, what="annotation file"):
        if not isinstance(r, dict):
            raise InputError(path, f"an annotation must be an object, got {type(r).__name__}", f"line {n}")
        bad = next((k for k in _TEXT_KEYS if k in r and not isinstance(r[k], str)), None)
        if bad is not None:
            raise InputError(path, f"{bad!r} must be a string, got {r[bad]!r}"[:200], f"line {n}")
        records.append(r)
    if records and all("clip_name" in r and "caption" in r for r in records):
        return "text", records
    if records and all("question" in r and "answer" in r for r in records):
        return "question", records
    raise InputError(
        path, "neither a retrieval ({caption, clip_name}) nor a QA ({question, answer}) annotation"
    )


def required_ids(*, truth=None, data_dir=None, split: str | None = None) -> list[tuple[str, int]] | None:
    """("text", line) of every caption and ("question", line) of every question: of `truth` (an annotation
    jsonl), or of `data_dir/retrieval/<split>.jsonl` and `data_dir/qa/<split>.jsonl` (split default test)."""
    if truth is not None:
        paths = [Path(truth)]
    elif data_dir is not None:
        name = f"{check_name(split or DEFAULT_SPLIT, 'split')}.jsonl"
        paths = [
            p for p in (Path(data_dir) / "retrieval" / name, Path(data_dir) / "qa" / name) if p.is_file()
        ]
        if not paths:
            raise InputError(data_dir, f"no retrieval/{name} or qa/{name}")
    else:
        return None
    out = []
    for p in paths:
        kind, records = _read_truth(p)
        out += [(kind, i) for i in range(len(records))]
    return out


def evaluate(pred: str | Path, truth: str | Path) -> dict[str, float]:
    """Validate `pred` against the annotation `truth`, then score it (percent, module docstring).

    Returns:
        retrieval: {"score" (mean of R@1/5/10), "r1", "r5", "r10", "queries"[, "medianR", "meanR"]};
        QA: {"score" (= overall_acc), "overall_acc", "<type>_acc", ...}.
    """
    kind, records = _read_truth(Path(truth))
    gallery = {str(r["clip_name"]) for r in records} if kind == "text" else None
    found_kind, found, problems = load(pred, [(kind, i) for i in range(len(records))], gallery)
    if found_kind not in (None, kind):
        problems = [f"the file holds {found_kind} predictions but {truth} is a {kind} annotation", *problems]
    if problems:
        raise InvalidSubmissionError(pred, problems)
    if kind == "question":
        acc = qa_accuracy([found[i] for i in range(len(records))], [str(r["answer"]) for r in records],
                          [str(r.get("answer_type", "")) for r in records])  # fmt: skip
        return {"score": acc["overall_acc"], **{k: v for k, v in acc.items() if k != "ratios"}}
    full = all(len(found[i]) == len(gallery) for i in range(len(records)))
    ranks = np.array([_rank(found[i], str(r["clip_name"]), len(gallery)) for i, r in enumerate(records)])
    m = rank_metrics(ranks)
    out = {"score": (m["r1"] + m["r5"] + m["r10"]) / 3, "r1": m["r1"], "r5": m["r5"], "r10": m["r10"],
           "queries": m["queries"]}  # fmt: skip
    return {**out, "medianR": m["medianR"], "meanR": m["meanR"]} if full else out


def _rank(ranking: list[str], gt: str, gallery_size: int) -> int:
    return ranking.index(gt) + 1 if gt in ranking else gallery_size + 1
