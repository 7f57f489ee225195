"""YouTube-8M metrics exactly as google/youtube-8m computes them (SPEC §2.3), vectorised with numpy.

Video level (2017/2018; `eval_util.py`, `average_precision_calculator.py`,
`mean_average_precision_calculator.py`): GAP@k (`gap`), per-class mAP (`video_map`), Hit@1, PERR.
Segment level (2019; `segment_eval_inference.py`): mAP@100K over a `Class,Segments` submission
(`segment_map`), with its ground-truth and CSV helpers; `RatedEntries` + `rated_map` give the same
mAP from the rated (segment, class) entries alone (out-of-fold scoring without writing a CSV).

Every AP here is the official non-interpolated `ap_at_n`: recall is measured against all positives
(including those never predicted), and tied scores are ranked in the order the official code ranks
them (`random.seed(0)` + `random.sample` + a stable sort over the calculator's heap list; see
`_official_ties`). Arithmetic is float64, as the official code ran under numpy 1.x; under numpy 2
(NEP 50) the official code, fed float32 labels, would accumulate in float32 instead.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vmmlib.io import safe
from vmmlib.io.safe import InputError
from vmmlib.io.segment_truth import read_segment_truth  # noqa: F401  (the one segment-truth reader, part of this API)

from ._official_ties import _stable_argsort_small_ints, heap_order, sample_positions

KAGGLE_HEADER = "Class,Segments"
MAX_SEGMENTS_PER_CLASS = 100_000
_ROWS_PER_CHUNK = 256  # top-k works on (256, C) blocks: cache sized, no full-size temporaries


# --------------------------------------------------------------------------- AP core


def _as_scores(x: np.ndarray) -> np.ndarray:
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def _ap_sum(ranks: np.ndarray, num_positives: float) -> float:
    """Σ over positives at 0-based `ranks` (ascending) of (poscount / (rank + 1)) / num_positives.

    Evaluated term by term and summed sequentially (cumsum), like the official loop, so the float64
    result is bit-identical to it."""
    if ranks.size == 0:
        return 0.0
    delta_recall = 1.0 / float(num_positives)
    terms = (np.arange(1, ranks.size + 1, dtype=np.float64) / (ranks + 1)) * delta_recall
    return float(np.cumsum(terms)[-1])


def _official_ap(
    scores: np.ndarray, actuals: np.ndarray, *, n: int | None, num_positives: float, heap: bool
) -> float:
    """One official AP.

    Args:
        scores, actuals: (N,) in the order the official code receives them: the arguments of
            `ap_at_n` (heap=False), or the push order into an `AveragePrecisionCalculator()` whose
            `peek_ap_at_n` hands its heap list to `ap_at_n` (heap=True).
        n: `ap_at_n`'s n (None = the whole list).
        num_positives: the recall denominator.
    """
    size = scores.shape[0]
    if size == 0 or num_positives == 0:  # empty heap -> 0 (peek_ap_at_n); numpos == 0 -> 0
        return 0.0
    if n is not None:
        num_positives = min(num_positives, n)
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        raise ValueError("scores contain NaN: the official ranking of NaN is undefined")
    positive = actuals > 0
    order = np.argsort(-scores)  # descending; any tie order for now, fixed below where it matters
    sorted_scores = scores[order]
    group = np.zeros(size, np.int64)  # tie group of each sorted position, 0 = highest score
    np.cumsum(sorted_scores[1:] != sorted_scores[:-1], out=group[1:])
    positive_sorted = positive[order]
    n_groups = int(group[-1]) + 1
    group_size = np.bincount(group, minlength=n_groups)
    group_positives = np.bincount(group, weights=positive_sorted, minlength=n_groups)
    mixed = (group_positives > 0) & (group_positives < group_size)
    if not mixed.any():  # no tie between a positive and a negative: the tie order cannot matter
        ranks = np.flatnonzero(positive_sorted)
    else:
        group_of_item = np.empty(size, np.int64)
        group_of_item[order] = group
        if heap:  # slots of the heap list; int keys that order like the official (score, actual) tuples
            if actuals.dtype == bool:
                values, actual_rank = np.array([False, True]), actuals.view(np.uint8)
            else:
                values, actual_rank = np.unique(actuals, return_inverse=True)
            keys = (n_groups - 1 - group_of_item) * len(values) + actual_rank.reshape(-1)
            heap_keys = heap_order(keys)
            slot_group = n_groups - 1 - heap_keys // len(values)
            slot_positive = values[heap_keys % len(values)] > 0
        else:
            slot_group, slot_positive = group_of_item, positive
        tied = np.flatnonzero(mixed[slot_group])  # slots whose tie order matters
        drawn_at = sample_positions(size, tied)  # their positions after random.sample
        tie_order = np.lexsort((drawn_at, slot_group[tied]))  # the stable sort: earlier draw first
        tied_group = slot_group[tied][tie_order]
        within = np.arange(tied.size) - np.searchsorted(tied_group, tied_group)
        group_start = np.cumsum(group_size) - group_size
        tied_ranks = (group_start[tied_group] + within)[slot_positive[tied][tie_order]]
        ranks = np.sort(np.concatenate([np.flatnonzero(positive_sorted & ~mixed[group]), tied_ranks]))
    if n is not None:
        ranks = ranks[ranks < n]
    return _ap_sum(ranks, num_positives)


def average_precision(
    predictions: Sequence[float] | np.ndarray,
    actuals: Sequence[float] | np.ndarray,
    *,
    n: int | None = None,
    total_num_positives: float | None = None,
) -> float:
    """`AveragePrecisionCalculator.ap_at_n(predictions, actuals, n, total_num_positives)`, exactly.

    Args:
        predictions: (N,) scores.
        actuals: (N,) ground truth; > 0 is positive.
        n: rank cut (the official staticmethod defaults to 20, its `ap` to None); numpos becomes
            min(numpos, n).
        total_num_positives: recall denominator; None = count of actuals > 0.

    Returns:
        AP in [0, 1]; 0 when numpos is 0. Ties are broken as the official shuffle + stable sort does.
    """
    predictions, actuals = np.asarray(predictions), np.asarray(actuals)
    if predictions.ndim != 1 or predictions.shape != actuals.shape:
        raise ValueError("the shape of predictions and actuals does not match.")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0):
        raise ValueError(f"n must be 'None' or a positive integer. It was '{n}'.")
    numpos = np.count_nonzero(actuals > 0) if total_num_positives is None else total_num_positives
    return _official_ap(_as_scores(predictions), actuals, n=n, num_positives=numpos, heap=False)


# --------------------------------------------------------------------------- video level


def _check_matrices(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 2 or predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} must be the same (N, C)")
    return _as_scores(predictions), labels


def _top_k_block(block: np.ndarray, k: int) -> np.ndarray:
    """Flat indices (row-major, ascending) into `block` (R, C) of each row's `argpartition(row, -k)[-k:]`."""
    rows, num_classes = block.shape
    if k == num_classes:
        return np.arange(rows * num_classes)
    n_blocks = 3 * k
    per_block = num_classes // n_blocks
    if per_block < 2:  # too few columns for the shortcut
        top = np.sort(np.argpartition(block, -k, axis=1)[:, -k:], axis=1)
        return (top + np.arange(rows)[:, None] * num_classes).reshape(-1)
    # Maxima of n_blocks disjoint column sets {q, q + n_blocks, ...}; the k-th largest of them is
    # reached by k distinct scores, so it is <= the row's k-th largest score: a safe candidate threshold.
    body = per_block * n_blocks
    block_max = block[:, :body].reshape(rows, per_block, n_blocks).max(axis=1)  # (R, n_blocks)
    extra = num_classes - body
    if extra:
        np.maximum(block_max[:, :extra], block[:, body:], out=block_max[:, :extra])
    threshold = np.partition(block_max, -k, axis=1)[:, -k]
    flat = np.flatnonzero(block >= threshold[:, None])  # ~k + a few candidates per row
    row = flat // num_classes
    values = block[row, flat - row * num_classes]
    count = np.bincount(row, minlength=rows)
    width = max(int(count.max()), k + 1)
    ladder = np.full((rows, width), -np.inf, values.dtype)  # each row's candidates, ascending
    ladder[row, np.arange(flat.size) - (np.cumsum(count) - count)[row]] = values
    ladder.sort(axis=1)
    kth, next_below = ladder[:, width - k], ladder[:, width - k - 1]
    # Where the k-th and (k+1)-th scores tie, which tied column is kept is argpartition's (introselect)
    # choice: ask it, on the same row, as the official top_k_triplets does. Also for NaN rows.
    redo = (count < k) | ((count > k) & (kth == next_below))
    if block.dtype.kind == "f":
        redo |= np.isnan(block_max).any(axis=1)
    keep = flat[(values >= kth[row]) & ~redo[row]]
    redo_rows = np.flatnonzero(redo)
    if redo_rows.size == 0:
        return keep
    again = [r * num_classes + np.argpartition(block[r], -k)[-k:] for r in redo_rows]
    return np.sort(np.concatenate([keep, *again]))


def top_k_indices(predictions: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The (video, class) pairs the official `top_k_by_class` keeps: per row `argpartition(row, -k)[-k:]`.

    Rows are scanned in (256, C) blocks; a row whose k-th and (k+1)-th scores are equal (or holds
    NaN) is handed to `np.argpartition` itself, so the tied class kept is the one the official code
    keeps with the installed numpy.

    Args:
        predictions: (N, C) scores; k is capped at C.

    Returns:
        rows, cols: (N*k,) int64, sorted by row then column.
    """
    predictions = _as_scores(np.asarray(predictions))
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be (N, C), got {predictions.shape}")
    rows, cols, _ = _top_k(predictions, k)
    return rows, cols


def _top_k(predictions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`top_k_indices` plus the kept scores (gathered while each block is in cache)."""
    if k <= 0:
        raise ValueError("k must be a positive integer.")
    num_videos, num_classes = predictions.shape
    k = min(k, num_classes)
    rows, cols, scores = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [predictions[:0, 0]]
    for start in range(0, num_videos, _ROWS_PER_CHUNK):
        block = predictions[start : start + _ROWS_PER_CHUNK]
        flat = _top_k_block(block, k)
        row = flat // num_classes
        rows.append(row + start)
        cols.append(flat - row * num_classes)
        scores.append(block.reshape(-1)[flat])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(scores)


def _num_positives(labels: np.ndarray, axis: int | None = None):
    """Σ labels, as the official `numpy.sum(labels[:, i])` (label values, not a count of > 0)."""
    if labels.dtype == bool:
        return np.count_nonzero(labels, axis=axis)
    return labels.sum(axis=axis, dtype=np.float64)


def gap(
    predictions: np.ndarray, labels: np.ndarray, top_k: int = 20, *, batch_size: int | None = None
) -> float:
    """Global average precision, `eval_util.calculate_gap` exactly (GAP@20 of YT8M 2017/2018).

    Each video keeps its top_k scores (`top_k_indices`); all kept (score, label) pairs go, class by
    class and video by video within a class (`flatten(top_k_by_class(...))`), into one
    `AveragePrecisionCalculator`; recall counts every positive label in `labels`, kept or not.

    Args:
        predictions: (N, C) float scores.
        labels: (N, C) multi-hot (bool / int / float; the official sums the values).
        top_k: predictions kept per video.
        batch_size: None reproduces `calculate_gap` (one call). An int reproduces
            `EvaluationMetrics.accumulate` fed consecutive batches of that many videos: the push
            order becomes batch, class, video, which only changes how tied scores are ranked.

    Returns:
        GAP in [0, 1].
    """
    predictions, labels = _check_matrices(predictions, labels)
    rows, cols, scores = _top_k(predictions, top_k)
    actuals = labels[rows, cols]  # gathered row-major: cache friendly
    if batch_size is None:
        push = _stable_argsort_small_ints(cols)  # class-major; videos stay in order within a class
    else:
        push = np.lexsort((rows, cols, rows // batch_size))
    total = _num_positives(labels)
    return _official_ap(scores[push], actuals[push], n=None, num_positives=total, heap=True)


def class_average_precisions(predictions: np.ndarray, labels: np.ndarray, top_k: int = 20) -> np.ndarray:
    """Per-class AP as `EvaluationMetrics` accumulates it into `MeanAveragePrecisionCalculator`.

    Class c's AP ranks the kept (top_k per video) scores of class c, pushed in video order, with
    recall over all of class c's positive labels; a class with positives but no kept score gets 0.

    Returns:
        (C,) float64; NaN for classes whose labels sum to 0 (`filter_empty_classes=True` drops them).
    """
    predictions, labels = _check_matrices(predictions, labels)
    rows, cols, scores = _top_k(predictions, top_k)
    push = _stable_argsort_small_ints(cols)
    scores, actuals, cols = scores[push], labels[rows, cols][push], cols[push]
    positives = _num_positives(labels, axis=0)
    bounds = np.searchsorted(cols, np.arange(labels.shape[1] + 1))
    aps = np.full(labels.shape[1], np.nan)
    for c in np.flatnonzero(positives > 0):
        lo, hi = bounds[c], bounds[c + 1]
        aps[c] = _official_ap(scores[lo:hi], actuals[lo:hi], n=None, num_positives=positives[c], heap=True)
    return aps


def video_map(predictions: np.ndarray, labels: np.ndarray, top_k: int = 20) -> float:
    """Mean of `class_average_precisions` over classes with positives (NaN if there are none)."""
    aps = class_average_precisions(predictions, labels, top_k)
    aps = aps[~np.isnan(aps)]
    return float(np.mean(aps)) if aps.size else float("nan")


def hit_at_one(predictions: np.ndarray, labels: np.ndarray) -> float:
    """`calculate_hit_at_one`: mean label value at each video's argmax (first index on ties).

    The official returns `numpy.average(hits)` in the labels' dtype; this is float64."""
    predictions, labels = _check_matrices(predictions, labels)
    top = np.argmax(predictions, axis=1)
    return float(np.mean(labels[np.arange(labels.shape[0]), top], dtype=np.float64))


def perr(predictions: np.ndarray, labels: np.ndarray) -> float:
    """`calculate_precision_at_equal_recall_rate`, per video then averaged over all videos.

    Video i with L = int(Σ labels[i]) > 0: Σ of labels over its `argpartition(row, -L)[-L:]` classes
    whose score is > 0, divided by L. A video with no label (L = 0) contributes 0 but still counts in
    the mean (the official takes `[-0:]`, i.e. every class, all of label 0).
    """
    predictions, labels = _check_matrices(predictions, labels)
    num_labels = _num_positives(labels, axis=1).astype(np.int64)  # int() truncates, as the official
    precision = np.zeros(labels.shape[0])
    for count in np.unique(num_labels[num_labels > 0]):
        videos = np.flatnonzero(num_labels == count)
        for start in range(0, videos.size, _ROWS_PER_CHUNK):
            chunk = videos[start : start + _ROWS_PER_CHUNK]
            scores = predictions[chunk]  # (R, C) copy
            top = np.argpartition(scores, -count, axis=1)[:, -count:]
            hit = np.where(np.take_along_axis(scores, top, 1) > 0, labels[chunk[:, None], top], 0)
            precision[chunk] = hit.sum(axis=1, dtype=np.float64) / count
    return float(precision.sum() / labels.shape[0])


# --------------------------------------------------------------------------- segment level (2019)


def segment_class_average_precisions(
    submission: Mapping[int, Sequence[str]],
    truth: Mapping[tuple[str, int], float],
    top_n: int | None = MAX_SEGMENTS_PER_CLASS,
) -> dict[int, float]:
    """Per submitted class, the AP `segment_eval_inference.py` computes; see `segment_map`."""
    positives: collections.Counter[int] = collections.Counter()
    rated: dict[int, dict[str, float]] = collections.defaultdict(dict)
    for (segment, label), score in truth.items():
        rated[label][segment] = score
        if score > 0:
            positives[label] += 1
    aps: dict[int, float] = {}
    for label, segments in sorted(((int(c), ids) for c, ids in submission.items()), key=lambda item: item[0]):
        if positives[label] == 0:  # hughshaoqz: .get(label, 0), then filter_empty_classes drops it
            continue
        if top_n:
            segments = segments[:top_n]
        scores_of = rated.get(label, {})
        rated_scores = np.array([scores_of[s] for s in segments if s in scores_of], dtype=np.float64)
        # synthetic scores (len - j) / len are distinct: the ranking is the submission order
        aps[label] = _ap_sum(np.flatnonzero(rated_scores > 0), positives[label])
    return aps


def segment_map(
    submission: Mapping[int, Sequence[str]],
    truth: Mapping[tuple[str, int], float],
    top_n: int | None = MAX_SEGMENTS_PER_CLASS,
) -> float:
    """YT8M 2019 segment mAP@top_n, as `segment_eval_inference.py` computes it.

    For each submitted class: cut its ranked segment ids to top_n (None/0 = no cut), then drop every
    segment not rated for that class (unrated segments neither help nor hurt), rank the rest in
    submission order; positive = rated score > 0; recall over all rated positives of the class.
    The mean runs over submitted classes only (absent classes are not counted). A submitted class
    with no rated positive is dropped (hughshaoqz's `.get(label, 0)` + `filter_empty_classes`;
    google's copy raises KeyError there). Duplicate ids in a row are counted each time, as the
    official does (`vmmlib.submissions.yt8m` refuses such a file).

    Args:
        submission: {class: segment ids "vid:start", best first}.
        truth: {("vid:start", class): score}, e.g. from `read_segment_truth`.

    Returns:
        mAP; NaN if no submitted class has a positive.
    """
    aps = list(segment_class_average_precisions(submission, truth, top_n).values())
    return float(np.mean(aps)) if aps else float("nan")


def read_kaggle_csv(path: str | Path, *, official_line_split: bool = False) -> dict[int, list[str]]:
    """Read a `Class,Segments` submission: {class: [segment ids, best first]}.

    A header line (first field not an integer) is skipped; a class repeated later wins, as in the
    official dict. `official_line_split=True` splits each line like `segment_eval_inference.py`
    (`split(",")`, then `split(" ")` on the raw line): the last id of each row keeps its newline and
    so never matches a rated segment. Off (default), ids are split on whitespace.
    """
    submission: dict[int, list[str]] = {}
    for line_no, line in _raw_lines(path):
        fields = line.split(",") if official_line_split else line.rstrip("\r\n").split(",")
        if len(fields) != 2:
            raise InputError(path, f"expected 'class,segments', got {line[:80]!r}", f"line {line_no}")
        label, segments = fields
        if not (label.strip().isascii() and label.strip().isdigit()):
            if line_no == 1:
                continue
            raise InputError(path, f"class id {label[:40]!r} is not an integer", f"line {line_no}")
        submission[int(label)] = segments.split(" ") if official_line_split else segments.split()
    return submission


def _raw_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(number, line with its end) as `open(path, newline="")` yields them ("\\n", "\\r\\n" or a bare
    "\\r" ends a line), read in binary through `vmmlib.io.safe`'s checks: a missing file or a
    folder, a line over the line limit or bytes that are not UTF-8 raise InputError naming the line."""
    limit = safe.DEFAULT_LIMITS.max_line_bytes
    p = safe.check_file(path, what="submission")
    n = 0
    with open(p, "rb") as f:
        while raw := f.readline(limit + 1):
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise InputError(p, f"line longer than {limit:,} bytes", f"line {n + 1}")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(p, f"not valid UTF-8 (byte 0x{raw[e.start]:02x})", f"line {n + 1}") from None
            for part in _BARE_CR.split(text):
                if part:
                    n += 1
                    yield n, part


_BARE_CR = re.compile(r"(?<=\r)(?!\n)")


def write_kaggle_csv(
    path: str | Path, submission: Mapping[int, Sequence[str]], *, max_per_class: int = MAX_SEGMENTS_PER_CLASS
) -> None:
    """Write {class: segment ids, best first} as `Class,Segments` CSV, one row per class (ascending).

    Raises ValueError if a class has more than `max_per_class` ids or an id holds a comma or a space."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(KAGGLE_HEADER + "\n")
        for label in sorted(submission):
            segments = list(submission[label])
            if len(segments) > max_per_class:
                raise ValueError(f"class {label}: {len(segments)} segments, more than {max_per_class}")
            bad = next((s for s in segments if "," in s or not s or s != "".join(s.split())), None)
            if bad is not None:
                raise ValueError(f"class {label}: segment id {bad!r} is empty or holds a comma or whitespace")
            f.write(f"{int(label)},{' '.join(segments)}\n")


# --------------------------------------------------------------------------- segment mAP from rated entries


@dataclass
class RatedEntries:
    """The rated (segment, class) entries of some videos, the only ones the segment metric reads.

    Attributes:
        segment_ids: (E,) "vid:start" of each entry.
        class_ids: (E,) int64 class of each entry.
        positive: (E,) bool, rated score > 0.
        num_positives: {class: rated positives}, the recall denominators.
    """

    segment_ids: np.ndarray
    class_ids: np.ndarray
    positive: np.ndarray
    num_positives: dict[int, int]

    @classmethod
    def from_truth(cls, truth: Mapping[tuple[str, int], float], classes: Sequence[int]) -> RatedEntries:
        """Entries of `truth` ({("vid:start", class): score}) whose class is among `classes`."""
        keep = {int(c) for c in classes}
        items = [(s, c, v) for (s, c), v in truth.items() if c in keep]
        positives: dict[int, int] = {}
        for _, c, v in items:
            if v > 0:
                positives[c] = positives.get(c, 0) + 1
        return cls(
            np.array([s for s, _, _ in items], dtype=str),
            np.array([c for _, c, _ in items], np.int64),
            np.array([v > 0 for _, _, v in items], bool),
            positives,
        )

    def ranks_in(self, ids: Sequence[str], ranking) -> np.ndarray:
        """(E,) 0-based rank of each entry in its class's list of `ranking` (-1 if not ranked).

        Args:
            ids: (N,) the segment id list the ranking indexes.
            ranking: a `vmmlib.ranking.Ranking` of classes (`query_ids` (C,), `index` (C, K)).
        """
        where = {s: j for j, s in enumerate(ids)}
        seg = np.array([where.get(s, -1) for s in self.segment_ids], np.int64)
        ranks = np.full(len(seg), -1, np.int64)
        row_of = {int(c): r for r, c in enumerate(ranking.query_ids)}
        for c in np.unique(self.class_ids):
            pick = np.flatnonzero((self.class_ids == c) & (seg >= 0))
            if int(c) not in row_of or not len(pick):
                continue
            row = ranking.index[row_of[int(c)]]
            inverse = np.full(max(len(ids), 1), -1, np.int64)
            valid = row[row >= 0]
            inverse[valid] = np.arange(len(valid))
            ranks[pick] = inverse[seg[pick]]
        return ranks


def rated_map(entries: RatedEntries, score: np.ndarray, present: np.ndarray, tiebreak: np.ndarray) -> float:
    """Segment mAP (`segment_map` semantics, no 100K cut) of a ranking given on the rated entries.

    Per class, the present entries are ordered by (score descending, tiebreak ascending); AP counts
    their positives against all of the class's rated positives; classes without positives are
    dropped. Equal to `segment_map` of the full ranking when no class list is cut at 100,000
    segments; past the cut each positive ranked beyond it adds at most 1e-5 to its class's AP.

    Args:
        score: (E,) ranking score of each entry; present: (E,) bool, the entry's segment is ranked
            for its class; tiebreak: (E,) int, the segment's index in the ranking's id list.
    """
    aps = []
    for c, num_pos in sorted(entries.num_positives.items()):
        pick = np.flatnonzero((entries.class_ids == c) & present)
        order = np.lexsort((tiebreak[pick], -score[pick]))
        aps.append(_ap_sum(np.flatnonzero(entries.positive[pick][order]), num_pos))
    return float(np.mean(aps)) if aps else float("nan")
