"""YouTube-8M 2019 predictions on disk: ranked segment lists, seed 003's rank vote, OOF, the Kaggle CSV.

- `SegmentRanking`: per whitelisted class, segments ranked best first (what inference writes).
- `TopSegments`: streams (segments × classes) score blocks into per-class top-N lists, bounded memory.
- `rank_vote`: seed 003's merge of ranked lists (SPEC §4.7/4.8): a segment at 0-based rank i of list
  m scores w_m · w0 / (i + w0); scores are summed over lists and the top 100,000 kept per class. TTA
  merges the shifts with w0 = 3.72384689385059 and equal weights; the model ensemble searches w0.
- Out-of-fold files (`oof_pairs.npz`: per TTA shift, the held-out segments ranked per class) and
  `oof_score`, the segment mAP of a rank vote computed from the rated (segment, class) entries
  alone (`RatedEntries`, `vote_map`), since the official metric drops every unrated segment.
- The Kaggle CSV (`Class,Segments`): writing the ensemble, validating, scoring; video-level
  prediction files (GAP@20, mAP, Hit@1, PERR) for `vmm evaluate yt8m`.

Reference: Shao & Liu, "BERT for Large-scale Video Segment Classification with Test-time
Augmentation", arXiv:1912.01127 (`hughshaoqz/3rd-Youtube8M-TM`, `src/Ensemble.ipynb`).
"""

from __future__ import annotations

import csv
import glob
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vmmlib.data import yt8m as Y
from vmmlib.io import read_examples
from vmmlib.metrics import yt8m as M
from vmmlib.metrics.yt8m import KAGGLE_HEADER, MAX_SEGMENTS_PER_CLASS, _ap_sum

OOF_FILE = "oof_pairs.npz"  # the name 30_inference asserts on (written for qqbrowser's pairs)
TTA_RANK_DECAY = 3.72384689385059  # seed 003's w0 for merging TTA shifts (`combine_tta`)
MIN_RANK_DECAY = 1e-6  # w0 = 0 makes the top vote 0/0; the search's lower bound is clipped to this
SEGMENT_SIZE = 5
VIDEO_CSV_HEADER = "VideoId,LabelConfidencePairs"  # the 2017/2018 video-level Kaggle format
_SEGMENT_ID = re.compile(r"^([^:,\s]+):(\d+)$")


@dataclass
class SegmentRanking:
    """Ranked segments of each class; row r of `index`/`score` belongs to `class_ids[r]`.

    Attributes:
        class_ids: (C,) int64 class ids (the whitelist, file order).
        index: (C, K) int64 rows into the segment id list that goes with the ranking, best first;
            -1 pads a row after its last segment.
        score: (C, K) float32 ranking scores, non-increasing along a row (probabilities for one
            shift, summed rank votes after a merge); 0 at padding.

    As an array (`np.asarray`, `np.isfinite`) it is its `score` matrix, so notebooks can check it.
    """

    class_ids: np.ndarray
    index: np.ndarray
    score: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.index.shape

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.score if dtype is None else self.score.astype(dtype)

    def lengths(self) -> np.ndarray:
        """(C,) number of ranked segments per class."""
        return (self.index >= 0).sum(1)

    def to_submission(self, ids: Sequence[str]) -> dict[int, list[str]]:
        """{class id: segment ids, best first}, the input of `write_kaggle_csv` and `segment_map`."""
        ids = np.asarray(ids)
        return {int(c): ids[row[row >= 0]].tolist() for c, row in zip(self.class_ids, self.index)}


def _sorted_rows(index: np.ndarray, score: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (score descending, index ascending), padding (-1) last; cut to top_n."""
    key = np.where(index >= 0, -score.astype(np.float64), np.inf)
    order = np.lexsort((np.where(index >= 0, index, np.iinfo(np.int64).max), key), axis=-1)[:, :top_n]
    index, score = np.take_along_axis(index, order, 1), np.take_along_axis(score, order, 1)
    return index, np.where(index >= 0, score, 0).astype(np.float32)


class TopSegments:
    """Per-class top-N segments of streamed score blocks (seed 003's per-class heaps, vectorised).

    Blocks are buffered and merged into the running top-N whenever `merge_rows` segments are waiting,
    so memory stays O(C · (top_n + merge_rows)) whatever the number of segments.

    Args:
        class_ids: (C,) the classes of the score columns.
        top_n: segments kept per class (`segment_max_pred` = 100,000).
    """

    def __init__(
        self, class_ids: Sequence[int], top_n: int = MAX_SEGMENTS_PER_CLASS, merge_rows: int = 65_536
    ):
        self.class_ids = np.asarray(class_ids, np.int64)
        self.top_n, self.merge_rows = top_n, merge_rows
        self.rows = 0
        C = len(self.class_ids)
        self._index, self._score = np.zeros((C, 0), np.int64), np.zeros((C, 0), np.float32)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def add(self, scores: np.ndarray) -> None:
        """scores float (B, C): the next B segments (they get indices rows .. rows + B - 1)."""
        scores = np.asarray(scores, np.float32)
        if scores.ndim != 2 or scores.shape[1] != len(self.class_ids):
            raise ValueError(f"scores must be (B, {len(self.class_ids)}), got {scores.shape}")
        if np.isnan(scores).any():
            raise ValueError("scores contain NaN")
        self._pending.append(scores)
        self._pending_rows += len(scores)
        if self._pending_rows >= self.merge_rows:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        block = np.concatenate(self._pending).T  # (B, C) -> (C, B)
        new_index = np.broadcast_to(np.arange(self.rows, self.rows + block.shape[1]), block.shape)
        self.rows += block.shape[1]
        self._pending, self._pending_rows = [], 0
        index = np.concatenate([self._index, new_index], 1)
        score = np.concatenate([self._score, block], 1)
        if index.shape[1] > self.top_n:
            keep = np.argpartition(-score, self.top_n - 1, axis=1)[:, : self.top_n]
            index, score = np.take_along_axis(index, keep, 1), np.take_along_axis(score, keep, 1)
        self._index, self._score = index, score

    def result(self) -> SegmentRanking:
        """The ranking of every segment added so far (ties: lower segment index first)."""
        self._merge()
        index, score = _sorted_rows(self._index, self._score, self.top_n)
        return SegmentRanking(self.class_ids.copy(), index, score)


def _rows_by_class(ranking: SegmentRanking, class_ids: np.ndarray) -> np.ndarray:
    row = {int(c): r for r, c in enumerate(ranking.class_ids)}
    missing = [int(c) for c in class_ids if int(c) not in row]
    if missing or len(ranking.class_ids) != len(class_ids):
        raise ValueError(
            f"rankings rank different classes (e.g. class {missing[:1] or ranking.class_ids[:1]})"
        )
    return np.array([row[int(c)] for c in class_ids])


def rank_vote(
    rankings: Sequence[SegmentRanking],
    weights: Sequence[float] | None = None,
    rank_decay: float = TTA_RANK_DECAY,
    top_n: int = MAX_SEGMENTS_PER_CLASS,
) -> SegmentRanking:
    """Seed 003's rank-based weighted vote over ranked lists (SPEC §4.7, `Ensemble.ipynb`).

    A segment at 0-based rank i of list m gets `w_m · w0 / (i + w0)`; votes are summed over the
    lists and each class keeps its top_n segments by total (ties: lower segment index first).
    Every ranking must index the same segment id list (see `align_rankings`).

    Args:
        weights: one per ranking (None: equal weights, as for TTA shifts).
        rank_decay: w0 (clipped below at 1e-6: w0 = 0 would make the top vote 0/0).
    """
    weights = [1.0] * len(rankings) if weights is None else [float(w) for w in weights]
    if len(weights) != len(rankings) or not rankings:
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    w0 = max(float(rank_decay), MIN_RANK_DECAY)
    class_ids = rankings[0].class_ids
    rows = [_rows_by_class(r, class_ids) for r in rankings]
    out_index, out_score = [], []
    for c in range(len(class_ids)):
        idx, vote = [], []
        for ranking, row, w in zip(rankings, rows, weights):
            segs = ranking.index[row[c]]
            segs = segs[segs >= 0]
            idx.append(segs)
            vote.append(w * w0 / (np.arange(len(segs)) + w0))
        unique, inverse = np.unique(np.concatenate(idx), return_inverse=True)
        total = np.bincount(inverse, weights=np.concatenate(vote), minlength=len(unique))
        order = np.lexsort((unique, -total))[:top_n]
        out_index.append(unique[order])
        out_score.append(total[order])
    width = max((len(r) for r in out_index), default=0)
    index = np.full((len(class_ids), width), -1, np.int64)
    score = np.zeros((len(class_ids), width), np.float32)
    for c, (i, s) in enumerate(zip(out_index, out_score)):
        index[c, : len(i)], score[c, : len(s)] = i, s
    return SegmentRanking(np.asarray(class_ids, np.int64).copy(), index, score)


@dataclass
class ShiftRankings:
    """One model's rankings of a split at each TTA shift (what `infer` returns and `30_inference`
    saves); `merged()` is seed 003's `combine_tta`: equal-weight rank vote, w0 = 3.72384689385059.

    As an array it is the (H, C, K) stack of the shifts' scores (zero-padded to one width)."""

    shifts: tuple[int, ...]
    rankings: list[SegmentRanking]

    def __post_init__(self):
        if len(self.shifts) != len(self.rankings) or not self.rankings:
            raise ValueError(f"{len(self.shifts)} shifts but {len(self.rankings)} rankings")

    @property
    def class_ids(self) -> np.ndarray:
        return self.rankings[0].class_ids

    def padded(self, name: str) -> np.ndarray:
        """(H, C, K) stack of the shifts' `index` (padded with -1) or `score` (padded with 0)."""
        fill = -1 if name == "index" else 0
        width = max(r.shape[1] for r in self.rankings)
        return np.stack(
            [
                np.pad(getattr(r, name), [(0, 0), (0, width - r.shape[1])], constant_values=fill)
                for r in self.rankings
            ]
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.shifts), *self.rankings[0].shape[:1], max(r.shape[1] for r in self.rankings))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        score = self.padded("score")
        return score if dtype is None else score.astype(dtype)

    def merged(self) -> SegmentRanking:
        return (
            rank_vote(self.rankings, rank_decay=TTA_RANK_DECAY)
            if len(self.rankings) > 1
            else self.rankings[0]
        )


def align_rankings(
    predictions: Sequence[tuple[Sequence[str], SegmentRanking]],
) -> tuple[list[str], list[SegmentRanking]]:
    """Re-index several models' (ids, ranking) onto one id list: the first model's ids, then any new ones."""
    ids: list[str] = []
    position: dict[str, int] = {}
    out = []
    for model_ids, ranking in predictions:
        local = np.empty(len(model_ids), np.int64)
        for j, seg in enumerate(model_ids):
            if seg not in position:
                position[seg] = len(ids)
                ids.append(seg)
            local[j] = position[seg]
        index = np.where(ranking.index >= 0, local[np.maximum(ranking.index, 0)], -1)
        out.append(SegmentRanking(ranking.class_ids, index, ranking.score))
    return ids, out


# --------------------------------------------------------------------------- mAP from rated entries


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

    def ranks_in(self, ids: Sequence[str], ranking: SegmentRanking) -> np.ndarray:
        """(E,) 0-based rank of each entry in its class's list of `ranking` (-1 if not ranked)."""
        where = {s: j for j, s in enumerate(ids)}
        seg = np.array([where.get(s, -1) for s in self.segment_ids], np.int64)
        ranks = np.full(len(seg), -1, np.int64)
        row_of = {int(c): r for r, c in enumerate(ranking.class_ids)}
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


def vote_map(
    entries: RatedEntries, ranks: Sequence[np.ndarray], weights, rank_decay: float, tiebreak
) -> float:
    """`rated_map` of `rank_vote` over several rankings, from each entry's rank in each (-1: absent)."""
    w0 = max(float(rank_decay), MIN_RANK_DECAY)
    score = np.zeros(len(entries.class_ids))
    for r, w in zip(ranks, weights):
        score += np.where(r >= 0, float(w) * w0 / (np.maximum(r, 0) + w0), 0.0)
    present = np.any([r >= 0 for r in ranks], axis=0) if ranks else np.zeros(len(score), bool)
    return rated_map(entries, score, present, tiebreak)


# --------------------------------------------------------------------------- out-of-fold files


def _oof_arrays(ids, rankings: list[SegmentRanking], shifts, fold_of: np.ndarray) -> dict[str, np.ndarray]:
    stack = ShiftRankings(tuple(int(x) for x in shifts), rankings)
    return {
        "segment_ids": np.asarray(ids, dtype=str),
        "class_ids": stack.class_ids,
        "shifts": np.asarray(stack.shifts, np.int64),
        "index": stack.padded("index"),
        "score": stack.padded("score"),
        "fold": np.asarray(fold_of, np.int64),
    }


def _shift_rankings(oof: dict) -> ShiftRankings:
    rankings = [SegmentRanking(oof["class_ids"], i, s) for i, s in zip(oof["index"], oof["score"])]
    return ShiftRankings(tuple(oof["shifts"].tolist()), rankings)


def oof_class_table(oof: dict, data) -> pd.DataFrame:
    """Per-class segment AP (official `segment_class_average_precisions`) per shift and after TTA."""
    videos = {s.rsplit(":", 1)[0] for s in oof["segment_ids"]}
    truth = {k: v for k, v in data.truth().items() if k[0].rsplit(":", 1)[0] in videos}
    shifts = _shift_rankings(oof)
    columns = {f"ap_shift{s:+d}": r for s, r in zip(shifts.shifts, shifts.rankings)}
    columns["ap_tta"] = shifts.merged()
    aps = {
        k: M.segment_class_average_precisions(r.to_submission(oof["segment_ids"]), truth)
        for k, r in columns.items()
    }
    positives = Counter(c for (_, c), v in truth.items() if v > 0)
    classes = sorted(aps["ap_tta"])
    return pd.DataFrame({"class": classes, "positives": [positives[c] for c in classes],
                         **{k: [a[c] for c in classes] for k, a in aps.items()}})  # fmt: skip


def load_oof(folder: str | Path) -> dict[str, np.ndarray]:
    """Out-of-fold per-shift rankings of one fold folder, or of an inference folder (all folds)."""
    with np.load(Path(folder) / OOF_FILE) as f:
        return {k: f[k] for k in f.files}


def merge_oof(fold_dirs: list[Path], *, by: str = "rank") -> dict[str, np.ndarray]:
    """The folds' out-of-fold rankings of one model as one (per shift and class, top 100,000 kept).

    Args:
        by: "rank" (default) interleaves the folds' lists by relative rank (i + ½) / n: fold models
            are calibrated differently, and a test ranking comes from one fold-averaged model, so
            each model is scored on its ranking quality; "score" ranks the pooled probabilities.
    """
    if by not in ("rank", "score"):
        raise ValueError(f"unknown merge {by!r}; valid choices: rank, score")
    parts = [load_oof(f) for f in fold_dirs]
    shifts = parts[0]["shifts"]
    for p in parts:
        if not np.array_equal(p["shifts"], shifts) or not np.array_equal(
            p["class_ids"], parts[0]["class_ids"]
        ):
            raise ValueError(
                "the folds differ in TTA shifts or classes: use the same data_options for every fold"
            )
    offsets = np.cumsum([0] + [len(p["segment_ids"]) for p in parts])
    index = np.concatenate([np.where(p["index"] >= 0, p["index"] + o, -1) for p, o in zip(parts, offsets)], 2)
    if by == "rank":
        keys = []
        for p in parts:
            n = np.maximum((p["index"] >= 0).sum(-1, keepdims=True), 1)
            keys.append(1.0 - (np.arange(p["index"].shape[-1]) + 0.5) / n)
        score = np.concatenate(keys, 2).astype(np.float32)
    else:
        score = np.concatenate([p["score"] for p in parts], 2)
    merged = [_sorted_rows(index[h], score[h], MAX_SEGMENTS_PER_CLASS) for h in range(len(shifts))]
    return {
        "segment_ids": np.concatenate([p["segment_ids"] for p in parts]),
        "class_ids": parts[0]["class_ids"],
        "shifts": shifts,
        "index": np.stack([i for i, _ in merged]),
        "score": np.stack([s for _, s in merged]),
        "fold": np.concatenate([p["fold"] for p in parts]),
    }


def save_oof(folder: str | Path, oof: dict[str, np.ndarray]) -> Path:
    path = Path(folder) / OOF_FILE
    np.savez(path, **_public(oof))
    return path


def _tta_ranking(oof: dict) -> SegmentRanking:
    """A model's out-of-fold ranking: its shifts merged by rank vote (w0 3.7238, equal weights); cached."""
    cache = oof.setdefault("_cache", {})
    if "tta" not in cache:
        cache["tta"] = _shift_rankings(oof).merged()
    return cache["tta"]


def oof_score(oofs: list[dict], weights, data, *, rank_decay: float = TTA_RANK_DECAY) -> float:
    """Out-of-fold segment mAP of the rank vote of several models (one model: weights [1]).

    Each model's shifts are first merged by the TTA vote; the models' lists are then merged with
    `w_m · w0 / (i + w0)`, w0 = `rank_decay` (SPEC §4.8, with the per-model weight vector the seed's
    objective meant to build). Scored on the rated entries of the out-of-fold videos (`vote_map`).
    """
    if len(weights) != len(oofs):
        raise ValueError(f"{len(weights)} weights for {len(oofs)} models")
    key = ("entries", id(data), tuple((id(o), len(o["segment_ids"])) for o in oofs))
    cache = oofs[0].setdefault("_cache", {})
    if key not in cache:  # everything but the vote itself is computed once per set of models
        ids, rankings = align_rankings([(o["segment_ids"].tolist(), _tta_ranking(o)) for o in oofs])
        videos = {s.rsplit(":", 1)[0] for s in ids}
        truth = {k: v for k, v in data.truth().items() if k[0].rsplit(":", 1)[0] in videos}
        entries = RatedEntries.from_truth(truth, rankings[0].class_ids)
        where = {s: j for j, s in enumerate(ids)}
        tiebreak = np.array([where.get(s, -1) for s in entries.segment_ids], np.int64)
        cache[key] = (entries, [entries.ranks_in(ids, r) for r in rankings], tiebreak)
    entries, ranks, tiebreak = cache[key]
    return vote_map(entries, ranks, weights, rank_decay, tiebreak)


def oof_breakdown(oof: dict, data) -> dict[str, float]:
    """Out-of-fold segment mAP of each TTA shift alone ({"shift-1": …, "shift+0": …}); `oof_score`
    gives the shifts' rank vote."""
    if len(oof["shifts"]) < 2:
        return {}
    scores = {}
    for h, shift in enumerate(oof["shifts"].tolist()):
        one = {**_public(oof), **{k: oof[k][h : h + 1] for k in ("shifts", "index", "score")}}
        scores[f"shift{shift:+d}"] = oof_score([one], [1.0], data)
    return scores


def _public(oof: dict) -> dict:
    return {k: v for k, v in oof.items() if not k.startswith("_")}


def ensemble_search_space(options: dict) -> dict[str, tuple[float, float]]:
    """Searched besides the model weights: the rank-decay w0 in [0, 10] (seed 003), unless fixed."""
    unknown = sorted(set(options) - {"rank_decay"})
    if unknown:
        raise ValueError(f"unknown ensemble option(s) {', '.join(unknown)}; yt8m takes rank_decay")
    return {} if "rank_decay" in options else {"rank_decay": (0.0, 10.0)}


# --------------------------------------------------------------------------- the Kaggle CSV


def validate_segment_csv(
    path: str | Path, required_classes: Sequence[int], *, max_per_class: int = MAX_SEGMENTS_PER_CLASS
) -> list[str]:
    """Problems with a 2019 submission (empty: valid).

    Checks: the `Class,Segments` header; one `class,ids` row per class, the class an integer in the
    whitelist (`required_classes`) and not repeated; at most `max_per_class` ids separated by single
    spaces, each `vid:start` with start a multiple of 5, none repeated within a row; every
    whitelisted class present.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return [f"{path}: cannot read the submission ({e})"]
    if not lines:
        return [f"{path}: empty file; expected the header {KAGGLE_HEADER!r} and one row per class"]
    problems = []
    first = 1
    if lines[0].strip() != KAGGLE_HEADER:
        problems.append(f"line 1 must be the header {KAGGLE_HEADER!r}, got {lines[0][:60]!r}")
        first = 0 if lines[0].split(",")[0].strip().isdigit() else 1  # a data row: check it too
    allowed = {int(c) for c in required_classes}
    seen: set[int] = set()
    for n, line in enumerate(lines[first:], first + 1):
        fields = line.split(",")
        if len(fields) != 2 or not fields[0].strip().isdigit():
            problems.append(f"line {n}: expected 'class_id,segment ids', got {line[:60]!r}")
            continue
        label = int(fields[0])
        if label not in allowed:
            problems.append(f"line {n}: class {label} is not in the rated class list (segment_label_ids.csv)")
        if label in seen:
            problems.append(f"line {n}: class {label} appears twice")
        seen.add(label)
        segments = fields[1].split(" ") if fields[1] else []
        if len(segments) > max_per_class:
            problems.append(
                f"line {n}: class {label} has {len(segments)} segments, more than {max_per_class}"
            )
        bad = next(
            (s for s in segments if not _SEGMENT_ID.match(s) or int(s.split(":")[1]) % SEGMENT_SIZE), None
        )
        if bad is not None:
            problems.append(
                f"line {n}: segment id {bad!r} is not 'video_id:start' with start a multiple of 5"
            )
        if len(set(segments)) != len(segments):
            problems.append(f"line {n}: class {label} lists a segment more than once")
    missing = sorted(allowed - seen)
    if missing:
        problems.append(f"{len(missing)} rated class(es) missing, e.g. {missing[0]}")
    return problems


def is_segment_csv(path: str | Path) -> bool:
    """True for a `Class,Segments` CSV (header, or a first row whose ids look like `vid:start`)."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
        if first == KAGGLE_HEADER:
            return True
        second = first if "," in first and first.split(",")[0].isdigit() else f.readline().strip()
    ids = second.split(",", 1)[1].split() if "," in second else []
    return bool(ids) and all(_SEGMENT_ID.match(s) for s in ids[:5])


# --------------------------------------------------------------------------- video-level predictions


def read_video_predictions(path: str | Path, num_classes: int) -> tuple[list[str], np.ndarray]:
    """Per-video class scores: an `.npz` with `ids` (N,) and `predictions` (N, num_classes), or the
    2018 Kaggle CSV `VideoId,LabelConfidencePairs` ("label score label score ..."; unlisted = 0).

    Returns:
        ids, float32 (N, num_classes).
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as f:
            if "ids" not in f.files or "predictions" not in f.files:
                raise ValueError(f"{path}: an .npz of video predictions needs arrays 'ids' and 'predictions'")
            ids, scores = [str(v) for v in f["ids"]], np.asarray(f["predictions"], np.float32)
        if scores.shape != (len(ids), num_classes):
            raise ValueError(f"{path}: predictions {scores.shape}, expected ({len(ids)}, {num_classes})")
        return ids, scores
    ids, rows = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for n, record in enumerate(csv.reader(f), 1):
            if n == 1 and record and record[0] == VIDEO_CSV_HEADER.split(",")[0]:
                continue
            if len(record) != 2:
                raise ValueError(
                    f"{path}:{n}: expected 'video_id,label score ...', got {','.join(record)[:60]!r}"
                )
            pairs = record[1].split()
            if len(pairs) % 2:
                raise ValueError(f"{path}:{n}: an odd number of label/score fields")
            row = np.zeros(num_classes, np.float32)
            for label, score in zip(pairs[::2], pairs[1::2]):
                if not 0 <= int(label) < num_classes:
                    raise ValueError(f"{path}:{n}: label {label} outside [0, {num_classes})")
                row[int(label)] = float(score)
            ids.append(record[0])
            rows.append(row)
    return ids, np.stack(rows) if rows else np.zeros((0, num_classes), np.float32)


# --------------------------------------------------------------------------- notebook-facing submission functions


def save_predictions(path: str | Path, ids: list[str], predictions: ShiftRankings) -> Path:
    """Write one model's per-shift rankings of a split (`predictions_<split>.npz`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=np.asarray(ids, dtype=str), class_ids=predictions.class_ids,
             shifts=np.asarray(predictions.shifts, np.int64), index=predictions.padded("index"),
             score=predictions.padded("score"))  # fmt: skip
    return path


def load_predictions(path: str | Path) -> tuple[list[str], ShiftRankings]:
    with np.load(path) as f:
        rankings = [SegmentRanking(f["class_ids"], i, s) for i, s in zip(f["index"], f["score"])]
        return f["ids"].tolist(), ShiftRankings(tuple(f["shifts"].tolist()), rankings)


def write_ensemble_submission(out_dir: str | Path, predictions: list[tuple[list[str], ShiftRankings]], weights,
                              *, rank_decay: float = TTA_RANK_DECAY) -> Path:  # fmt: skip
    """Merge each model's TTA shifts (`ShiftRankings.merged`), then the models by weighted rank vote
    with w0 = `rank_decay`, as `oof_score` does, and write `submission.csv` (`Class,Segments`,
    ≤ 100,000 ranked segment ids per whitelisted class)."""
    ids, rankings = align_rankings([(i, p.merged()) for i, p in predictions])
    merged = rank_vote(rankings, weights, rank_decay=rank_decay)
    path = Path(out_dir) / "submission.csv"
    M.write_kaggle_csv(path, merged.to_submission(ids))
    return path


def validate_submission(path: str | Path, required) -> list[str]:
    """Problems with a Kaggle CSV (empty list: valid); see `validate_segment_csv`."""
    return validate_segment_csv(path, required)


def required_ids_for(
    *, truth: str | Path | None = None, data_dir: str | Path | None = None, split: str = "test"
) -> list[int]:
    """The whitelisted classes, from a data folder's segment_label_ids.csv (or `truth` = that file or a data folder)."""
    for source in (data_dir, truth):
        if source:
            path = Path(source)
            path = path / "segment_label_ids.csv" if path.is_dir() else path
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: the rated class list is segment_label_ids.csv")
            return Y.read_segment_label_ids(path).tolist()
    raise ValueError("say where the rated classes are: --data-dir DIR or --truth segment_label_ids.csv")


def _truth_shards(truth: str | Path) -> list[Path]:
    """Frame-level validate shards named by `truth`: a data folder, a folder of shards, a file or a glob."""
    path = Path(truth)
    if path.is_dir():
        shards = Y.split_files(path, "frame/validate") or sorted(path.glob("*.tfrecord"))
    else:
        shards = sorted(Path(p) for p in glob.glob(str(truth)))
    if not shards:
        raise FileNotFoundError(f"no validate shards (*.tfrecord) at {truth}")
    return shards


def evaluate_submission(pred: str | Path, truth: str | Path) -> dict[str, float]:
    """Score predictions against labelled shards (`truth`: a data folder → frame/validate, shards, a glob).

    - A Kaggle `Class,Segments` CSV: segment mAP@100K (`segment_map`, the official semantics).
    - Video-level scores (`.npz` ids + (N, 3862) predictions, or a `VideoId,LabelConfidencePairs`
      CSV): GAP@20, mAP, Hit@1 and PERR over the truth's videos (a video without prediction scores 0).
    """
    records = [ctx for p in _truth_shards(truth)
               for ctx, _ in read_examples(p, keys=list(Y.CONTEXT_KEYS), schema=Y.FRAME_SCHEMA, sequence=True)]  # fmt: skip
    meta = [Y._context(c) for c in records]
    if Path(pred).suffix != ".npz" and is_segment_csv(pred):
        gt = M.read_segment_truth([m["id"] for m in meta], [m["segment_start_times"] for m in meta],
                                  [m["segment_labels"] for m in meta], [m["segment_scores"] for m in meta])  # fmt: skip
        submission = M.read_kaggle_csv(pred)
        aps = M.segment_class_average_precisions(submission, gt)
        return {"segment_map": float(np.mean(list(aps.values()))) if aps else float("nan"),
                "classes_scored": len(aps), "rated_entries": len(gt)}  # fmt: skip
    ids, scores = read_video_predictions(pred, Y.NUM_CLASSES)
    row = {v: i for i, v in enumerate(ids)}
    preds = np.zeros((len(meta), Y.NUM_CLASSES), np.float32)
    found = [row.get(m["id"]) for m in meta]
    for i, r in enumerate(found):
        if r is not None:
            preds[i] = scores[r]
    labels = np.stack([Y.multi_hot(m["labels"]) for m in meta])
    return {"gap": M.gap(preds, labels), "map": M.video_map(preds, labels), "hit_at_1": M.hit_at_one(preds, labels),
            "perr": M.perr(preds, labels), "videos": len(meta), "videos_missing": sum(r is None for r in found)}  # fmt: skip
