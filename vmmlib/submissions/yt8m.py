"""YouTube-8M submissions: the 2019 Kaggle `Class,Segments` CSV, and 2017/2018 video-level predictions.

2019 (segment mAP@100K, SPEC §2.3): a header `Class,Segments`, then one row per whitelisted class
(`segment_label_ids.csv`): `class,vid:start vid:start ...`, at most 100,000 segment ids best
first, separated by single spaces, each start a multiple of 5. The official scorer drops unrated
segments and would count a segment listed twice twice (a positive repeated 50 times scores an AP
of 50): such a file is invalid here, as are non-ASCII digits (`vid:٥`, class `²`), ids that are not
`[A-Za-z0-9_-]+:start`, starts past 9 digits, a class outside [0, 3862) or off the whitelist, a class
listed twice, and a missing whitelisted class (when the whitelist is known). The file is checked
line by line (a full submission is ~1 GB).

Video level (GAP@20, mAP, Hit@1, PERR): an `.npz` with `ids` (N,) and `predictions` (N, 3862), or
the Kaggle CSV `VideoId,LabelConfidencePairs` ("label score label score ...", unlisted = 0).

No torch here (`vmmlib.data.yt8m.reader` reads the truth shards).
"""

from __future__ import annotations

import glob
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from vmmlib.data.record_checks import read_with_refs
from vmmlib.data.yt8m.reader import (
    CONTEXT_KEYS,
    FRAME_SCHEMA,
    NUM_CLASSES,
    SEGMENT_SIZE,
    multi_hot,
    parse_context,
    read_segment_label_ids,
    split_files,
)
from vmmlib.io import safe
from vmmlib.io.safe import InputError
from vmmlib.io.safe_npz import load_npy_kinds
from vmmlib.metrics import yt8m as M
from vmmlib.metrics.yt8m import KAGGLE_HEADER, MAX_SEGMENTS_PER_CLASS
from vmmlib.submissions import InvalidSubmissionError
from vmmlib.submissions._ids import IdCounter

VIDEO_CSV_HEADER = "VideoId,LabelConfidencePairs"  # the 2017/2018 video-level Kaggle format
CLASS_LIST = "segment_label_ids.csv"
MAX_PROBLEM_LINES = 20  # a broken file is summarised, not echoed
MAX_LINE_CHARS = 1 << 24  # a row of 100,000 ids takes ~1 MB
_CLASS = re.compile(r"(0|[1-9][0-9]{0,8})", re.ASCII)
_SEGMENT_ID = re.compile(r"[A-Za-z0-9_-]+:(0|[1-9][0-9]{0,8})", re.ASCII)
_SCORE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def write(path: str | Path, submission: Mapping[int, Sequence[str]]) -> Path:
    """Write {class: segment ids, best first} as the Kaggle `Class,Segments` CSV (classes ascending)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    M.write_kaggle_csv(path, submission)
    return path


def read(path: str | Path) -> dict[int, list[str]]:
    """{class: segment ids, best first} of a valid `Class,Segments` CSV; InvalidSubmissionError if invalid."""
    problems = _segment_csv_problems(path, None)
    if problems:
        raise InvalidSubmissionError(path, problems)
    return M.read_kaggle_csv(path)


def validate(path: str | Path, required_ids: Iterable[int] | None = None) -> list[str]:
    """Problems with a submission, one line each (empty: valid).

    A `Class,Segments` CSV is checked against the whitelist `required_ids` (None: format only,
    classes in [0, 3862)); video-level predictions (`.npz` or `VideoId,LabelConfidencePairs`) for
    their format.
    """
    if is_video_level(path):
        return _video_problems(path)
    return _segment_csv_problems(path, required_ids)


def evaluate(pred: str | Path, truth: str | Path) -> dict[str, float]:
    """Score predictions against labelled shards (`truth`: a data folder → frame/validate, shards, a glob).

    - A Kaggle `Class,Segments` CSV: segment mAP@100K (`segment_map`, the official semantics),
      after `validate` (against the whitelist when `truth` is a data folder).
    - Video-level scores: GAP@20, mAP, Hit@1 and PERR over the truth's videos (a video without
      prediction scores 0).

    Raises:
        InvalidSubmissionError: the file is invalid (its problem list).
    """
    videos = [parse_context(ctx, ref) for path in _truth_shards(truth) for ref, (ctx, _) in
              read_with_refs(path, keys=list(CONTEXT_KEYS), schema=FRAME_SCHEMA, sequence=True)]  # fmt: skip
    if not videos:
        raise InputError(truth, "no labelled videos in the validate shards")
    if not is_video_level(pred):
        problems = _segment_csv_problems(pred, required_ids(truth=truth))
        if problems:
            raise InvalidSubmissionError(pred, problems)
        gt = M.read_segment_truth([v["id"] for v in videos], [v["segment_start_times"] for v in videos],
                                  [v["segment_labels"] for v in videos], [v["segment_scores"] for v in videos])  # fmt: skip
        aps = M.segment_class_average_precisions(M.read_kaggle_csv(pred), gt)
        return {"segment_map": float(np.mean(list(aps.values()))) if aps else float("nan"),
                "classes_scored": len(aps), "rated_entries": len(gt)}  # fmt: skip
    ids, scores, problems = read_video_predictions(pred)
    if problems:
        raise InvalidSubmissionError(pred, problems)
    row = {v: i for i, v in enumerate(ids)}
    found = [row.get(v["id"]) for v in videos]
    preds = np.zeros((len(videos), NUM_CLASSES), np.float32)
    for i, r in enumerate(found):
        if r is not None:
            preds[i] = scores[r]
    labels = np.stack([multi_hot(v["labels"]) for v in videos]) if videos else preds
    return {"gap": M.gap(preds, labels), "map": M.video_map(preds, labels), "hit_at_1": M.hit_at_one(preds, labels),
            "perr": M.perr(preds, labels), "videos": len(videos), "videos_missing": sum(r is None for r in found)}  # fmt: skip


def required_ids(
    *, truth: str | Path | None = None, data_dir: str | Path | None = None, split: str | None = None
) -> list[int] | None:
    """The whitelisted classes every row set must cover, from `segment_label_ids.csv`: `data_dir`'s,
    or `truth` = that file or a folder holding it (the same for every split); None without a source."""
    for source in (data_dir, truth):
        if not source:
            continue
        path = Path(source)
        if path.is_dir() and (path / CLASS_LIST).is_file():
            return read_segment_label_ids(path / CLASS_LIST).tolist()
        if path.is_file() and path.suffix == ".csv":
            return read_segment_label_ids(path).tolist()
        if source is data_dir:
            raise InputError(path / CLASS_LIST, f"not found: the rated class list is {CLASS_LIST}")
    return None


# --------------------------------------------------------------------------- the Kaggle CSV


class _Problems(list):
    """A problem list that keeps the first MAX_PROBLEM_LINES lines and counts the rest."""

    dropped = 0

    def add(self, line: str) -> None:
        if len(self) < MAX_PROBLEM_LINES:
            self.append(line)
        else:
            self.dropped += 1

    def done(self) -> list[str]:
        return [*self, *([f"... and {self.dropped} more problem(s)"] if self.dropped else [])]


def _segment_csv_problems(path: str | Path, required: Iterable[int] | None) -> list[str]:
    """The checks of the module docstring, line by line."""
    allowed = None if required is None else {int(c) for c in required}
    problems, seen = _Problems(), set()
    try:
        for n, line in enumerate(_lines(path), 1):
            if line is None:
                problems.add(f"line {n}: longer than {MAX_LINE_CHARS} characters")
                continue
            if n == 1 and line.strip() == KAGGLE_HEADER:
                continue
            if n == 1:
                problems.add(f"line 1 must be the header {KAGGLE_HEADER!r}, got {line[:60]!r}")
                if not _CLASS.fullmatch(line.split(",")[0].strip()):
                    continue  # not a data row either
            _check_row(n, line, allowed, seen, problems)
    except InputError as e:
        return [f"{path}: cannot read the submission ({e.where + ': ' if e.where else ''}{e.reason})"]
    if not seen and not problems:
        problems.add(f"{path}: no rows; expected the header {KAGGLE_HEADER!r} and one row per class")
    missing = sorted(allowed - seen) if allowed is not None else []
    if missing:
        problems.add(f"{len(missing)} rated class(es) missing, e.g. {missing[0]}")
    return problems.done()


def _lines(path: str | Path) -> Iterator[str | None]:
    """The lines of a UTF-8 text file without their ends ("\\n", "\\r\\n" or "\\r", as `newline=""`
    reads them), read at most MAX_LINE_CHARS bytes at a time (None for a longer line, skipped).

    Raises:
        InputError: the file is missing or not a file, or a line is not UTF-8 (naming the line).
    """
    p = safe.check_file(path, what="submission")
    n = 0
    with open(p, "rb") as f:
        while raw := f.readline(MAX_LINE_CHARS):
            if len(raw) == MAX_LINE_CHARS and not raw.endswith(b"\n"):
                while (rest := f.readline(MAX_LINE_CHARS)) and not rest.endswith(b"\n"):
                    pass
                n += 1
                yield None
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(p, f"not valid UTF-8 (byte 0x{raw[e.start]:02x})", f"line {n + 1}") from None
            body = text[:-1] if text.endswith("\n") else text
            for part in body.removesuffix("\r").split("\r"):
                n += 1
                yield part


def _check_row(n: int, line: str, allowed: set[int] | None, seen: set[int], problems: _Problems) -> None:
    fields = line.split(",")
    if len(fields) != 2 or not _CLASS.fullmatch(fields[0]):
        problems.add(
            f"line {n}: expected 'class_id,segment ids' (ASCII digits, no spaces), got {line[:60]!r}"
        )
        return
    label = int(fields[0])
    if allowed is not None and label not in allowed:
        problems.add(f"line {n}: class {label} is not in the rated class list ({CLASS_LIST})")
    elif label >= NUM_CLASSES:
        problems.add(f"line {n}: class {label} is outside the vocabulary [0, {NUM_CLASSES})")
    if label in seen:
        problems.add(f"line {n}: class {label} appears twice")
    seen.add(label)
    segments = fields[1].split(" ") if fields[1] else []
    if len(segments) > MAX_SEGMENTS_PER_CLASS:
        problems.add(
            f"line {n}: class {label} has {len(segments)} segments, more than {MAX_SEGMENTS_PER_CLASS}"
        )
    bad = next((s for s in segments if not _segment_ok(s)), None)
    if bad is not None:
        problems.add(
            f"line {n}: segment id {bad[:40]!r} is not 'video_id:start' ([A-Za-z0-9_-] id, start an "
            f"ASCII integer of at most 9 digits, a multiple of {SEGMENT_SIZE}, single spaces between ids)"
        )
    if len(set(segments)) != len(segments):
        twice = next(s for s, c in _counts(segments).items() if c > 1)
        problems.add(f"line {n}: class {label} lists a segment more than once (e.g. {twice[:40]!r})")


def _segment_ok(segment: str) -> bool:
    match = _SEGMENT_ID.fullmatch(segment)
    return match is not None and int(match.group(1)) % SEGMENT_SIZE == 0


def _counts(items: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in items:
        counts[s] = counts.get(s, 0) + 1
    return counts


def is_video_level(path: str | Path) -> bool:
    """True for video-level predictions: an `.npz`, or a CSV whose header is `VideoId,LabelConfidencePairs`."""
    if Path(path).suffix == ".npz":
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline(256).strip() == VIDEO_CSV_HEADER
    except OSError:
        return False


# --------------------------------------------------------------------------- video-level predictions


def read_video_predictions(
    path: str | Path, num_classes: int = NUM_CLASSES
) -> tuple[list[str], np.ndarray, list[str]]:
    """Per-video class scores and their problems: an `.npz` (`ids`, `predictions`), or the 2018 CSV.

    Returns:
        ids (N,), float32 (N, num_classes) scores, problems (empty: valid; then ids are unique and
        every score finite).
    """
    path = Path(path)
    empty = np.zeros((0, num_classes), np.float32)
    try:
        if path.suffix == ".npz":
            ids, scores, problems = _read_npz(path, num_classes)
        else:
            ids, sparse, problems = _read_video_csv(path, num_classes)
            scores = _dense(sparse, num_classes, path)
    except InputError as e:
        return (
            [],
            empty,
            [f"{path}: cannot read the predictions ({e.where + ': ' if e.where else ''}{e.reason})"],
        )
    _check_ids_and_scores(ids, scores, problems)
    return ids, scores, problems.done()


def _video_problems(path: str | Path, num_classes: int = NUM_CLASSES) -> list[str]:
    """`read_video_predictions`'s problems, keeping no scores for a CSV (bounded memory)."""
    path = Path(path)
    if path.suffix == ".npz":
        return read_video_predictions(path, num_classes)[2]
    nonfinite = 0

    def check(vid: str, labels: np.ndarray, values: np.ndarray) -> None:
        nonlocal nonfinite
        ids.add(vid)
        nonfinite += not np.isfinite(values).all()

    with IdCounter() as ids:
        try:
            problems = _video_csv_rows(path, num_classes, check)
        except InputError as e:
            return [f"{path}: cannot read the predictions ({e.where + ': ' if e.where else ''}{e.reason})"]
        _note_repeats(ids, problems)
    if nonfinite:
        problems.add(f"{nonfinite} video(s) have NaN or inf scores")
    return problems.done()


def _check_ids_and_scores(ids: list[str], scores: np.ndarray, problems: _Problems) -> None:
    with IdCounter() as counter:
        for v in ids:
            counter.add(v)
        _note_repeats(counter, problems)
    if not np.isfinite(scores).all():
        problems.add(f"{int((~np.isfinite(scores)).any(1).sum())} video(s) have NaN or inf scores")


def _note_repeats(ids: IdCounter, problems: _Problems) -> None:
    repeats, first = 0, None
    for c in ids.counts(repeated_only=True):
        if c.repeats:
            repeats += c.repeats
            first = min(first or (c.first, c.key), (c.first, c.key))
    if repeats:
        problems.add(f"{repeats} video id(s) repeat, e.g. {first[1]!r}")


def _npz_limits() -> safe.Limits:
    """Scores of mostly-zero classes deflate far past the bomb ratio: allow it, keep the size limits."""
    return replace(safe.DEFAULT_LIMITS, max_zip_ratio=max(safe.DEFAULT_LIMITS.max_zip_ratio, 5000.0))


def _read_npz(path: Path, num_classes: int) -> tuple[list[str], np.ndarray, _Problems]:
    problems = _Problems()
    limits = _npz_limits()
    with safe.open_zip(path, limits=limits) as z:
        if "ids.npy" not in z.members or "predictions.npy" not in z.members:
            problems.add(f"{path}: an .npz of video predictions needs arrays 'ids' and 'predictions'")
            return [], np.zeros((0, num_classes), np.float32), problems
        raw_ids = load_npy_kinds(
            z.read("ids.npy"), "iuUS", path=path, where="member 'ids.npy'", limits=limits
        )
        scores = safe.load_npy(
            z.read("predictions.npy"), path=path, where="member 'predictions.npy'", limits=limits
        )
    ids = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in raw_ids.ravel().tolist()]
    scores = np.asarray(scores, np.float32)
    if raw_ids.ndim != 1 or scores.shape != (len(ids), num_classes):
        problems.add(f"{path}: predictions {scores.shape}, expected ({len(ids)}, {num_classes})")
        return ids, np.zeros((0, num_classes), np.float32), problems
    return ids, scores, problems


def _read_video_csv(path: Path, num_classes: int) -> tuple[list[str], tuple, _Problems]:
    """ids, the scores as (offsets, labels, values) flat arrays (sparse: unlisted = 0), problems."""
    ids, offsets, labels, values = [], array("q", [0]), array("H"), array("f")

    def keep(vid: str, row_labels: np.ndarray, row_values: np.ndarray) -> None:
        ids.append(vid)
        labels.extend(row_labels.tolist())
        values.extend(row_values.tolist())
        offsets.append(len(labels))

    problems = _video_csv_rows(path, num_classes, keep)
    return ids, (offsets, labels, values), problems


def _dense(sparse: tuple, num_classes: int, path: Path) -> np.ndarray:
    offsets, labels, values = (np.frombuffer(a, dtype=a.typecode) for a in sparse)
    rows = len(offsets) - 1
    limit = safe.DEFAULT_LIMITS.max_array_bytes
    if rows * num_classes * 4 > limit:
        raise InputError(path, f"{rows:,} videos × {num_classes} classes is over {limit:,} bytes of scores")
    scores = np.zeros((rows, num_classes), np.float32)
    row_of = np.repeat(np.arange(rows), np.diff(offsets))
    scores[row_of, labels.astype(np.int64)] = values  # a label listed twice in a row: the last wins
    return scores


def _video_csv_rows(path: Path, num_classes: int, on_row: Callable) -> _Problems:
    """Check each line of a `VideoId,LabelConfidencePairs` CSV, streamed; `on_row(id, labels, values)`
    for each well-formed one (a row whose pairs stop at a bad one keeps the pairs before it)."""
    problems = _Problems()
    for n, line in enumerate(_lines(path), 1):
        if line is None:
            problems.add(f"{path}:{n}: longer than {MAX_LINE_CHARS} characters")
            continue
        if n == 1 and line == VIDEO_CSV_HEADER:
            continue
        fields = line.split(",")
        pairs = fields[1].split() if len(fields) == 2 else []
        if len(fields) != 2 or not fields[0] or len(pairs) % 2:
            problems.add(f"{path}:{n}: expected 'video_id,label score label score ...', got {line[:60]!r}")
            continue
        row_labels, row_values = [], []
        for label, score in zip(pairs[::2], pairs[1::2]):
            if not _CLASS.fullmatch(label) or int(label) >= num_classes or not _SCORE.fullmatch(score):
                problems.add(
                    f"{path}:{n}: {label[:12]!r} {score[:20]!r} is not 'label score' (label in [0, {num_classes}))"
                )
                break
            row_labels.append(int(label))
            row_values.append(float(score))
        on_row(fields[0], np.array(row_labels, np.int64), np.array(row_values, np.float32))
    return problems


def _truth_shards(truth: str | Path) -> list[Path]:
    """Frame-level validate shards named by `truth`: a data folder, a folder of shards, a file or a glob."""
    path = Path(truth)
    if path.is_dir():
        shards = split_files(path, "frame/validate") or sorted(path.glob("*.tfrecord"))
    else:
        shards = sorted(Path(p) for p in glob.glob(str(truth)))
    if not shards:
        raise InputError(truth, "no validate shards (*.tfrecord)")
    return shards
