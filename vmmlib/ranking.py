"""Per-query rankings of items, shared by every retrieval-like task.

A ranking holds, for each query, item indices best first with their scores: YouTube-8M ranks
segments (items) per class (queries), MUGE images per text, avfusion videos per text.

- `Ranking`: the (queries × K) index/score matrices, -1 padding after a query's last item.
- `TopK`: streams (items × queries) score blocks into the per-query top K, in bounded memory;
  `top_k` ranks a whole (queries × items) score matrix at once.
- `rank_vote`: seed 003's merge of ranked lists (SPEC §4.7/4.8): an item at 0-based rank i of list
  m scores w_m · w0 / (i + w0); votes are summed over lists. `rank_vote_scores` is the same vote
  computed from each entry's rank in each list (what an out-of-fold metric needs).
- `ShiftRankings`: one model's rankings under several test-time views (yt8m's frame shifts),
  merged by an equal-weight rank vote.
- `align_rankings`: re-index several models' rankings onto one item id list.

Ties are broken by the lower item index everywhere, so results never depend on block sizes.

Reference: Shao & Liu, "BERT for Large-scale Video Segment Classification with Test-time
Augmentation", arXiv:1912.01127 (the rank vote and its w0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TTA_RANK_DECAY = 3.72384689385059  # seed 003's w0 for merging TTA views (`combine_tta`)
MIN_RANK_DECAY = 1e-6  # w0 = 0 makes the top vote 0/0; a smaller w0 is clipped to this
PENDING_VALUES = 1 << 26  # TopK merges once this many streamed scores wait (256 MiB of float32)


@dataclass
class Ranking:
    """Ranked items of each query; row r of `index`/`score` belongs to `query_ids[r]`.

    Attributes:
        query_ids: (Q,) the queries (yt8m: class ids; muge: text ids), in file order.
        index: (Q, K) int64 rows into the item id list that goes with the ranking, best first;
            -1 pads a row after its last item.
        score: (Q, K) float32 ranking scores, non-increasing along a row; 0 at padding.

    As an array (`np.asarray`, `np.isfinite`) it is its `score` matrix, so notebooks can check it.
    """

    query_ids: np.ndarray
    index: np.ndarray
    score: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.index.shape

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.score if dtype is None else self.score.astype(dtype)

    def lengths(self) -> np.ndarray:
        """(Q,) number of ranked items per query."""
        return (self.index >= 0).sum(1)

    def to_submission(self, item_ids: Sequence) -> dict:
        """{query id: item ids, best first} (yt8m: `write_kaggle_csv`'s input; muge: text → images)."""
        item_ids = np.asarray(item_ids)
        return {_plain(q): item_ids[row[row >= 0]].tolist() for q, row in zip(self.query_ids, self.index)}

    def rows_of(self, query_ids: Sequence) -> np.ndarray:
        """(len(query_ids),) row of each query; ValueError if the queries differ from this ranking's."""
        row = {_plain(q): r for r, q in enumerate(self.query_ids)}
        missing = [_plain(q) for q in query_ids if _plain(q) not in row]
        if missing or len(self.query_ids) != len(query_ids):
            example = missing[:1] or [_plain(q) for q in self.query_ids[:1]]
            raise ValueError(f"rankings rank different queries (e.g. {example[0]!r})")
        return np.array([row[_plain(q)] for q in query_ids], np.int64)


def _plain(value):
    """A numpy scalar as the Python value (dict keys compare and print plainly)."""
    return value.item() if isinstance(value, np.generic) else value


def sort_rows(
    index: np.ndarray, score: np.ndarray, top_k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (score descending, index ascending), padding (-1) last; cut to top_k.

    Args:
        index: (Q, W) int64 item indices, -1 = padding; score: (Q, W) scores.

    Returns:
        index (Q, min(W, top_k)) int64 and score float32 (0 at padding).
    """
    key = np.where(index >= 0, -score.astype(np.float64), np.inf)
    order = np.lexsort((np.where(index >= 0, index, np.iinfo(np.int64).max), key), axis=-1)[:, :top_k]
    index, score = np.take_along_axis(index, order, 1), np.take_along_axis(score, order, 1)
    return index, np.where(index >= 0, score, 0).astype(np.float32)


def _keep_top(index: np.ndarray, score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score descending, then lower index) entries of each row, in no particular order."""
    if index.shape[1] <= k:
        return index, score
    kth = -np.partition(-score, k - 1, axis=1)[:, k - 1 : k]  # (Q, 1) k-th largest score
    above = score > kth
    need = k - above.sum(1, keepdims=True)  # tied entries still to take, lowest index first
    tied = np.where(score == kth, index, np.iinfo(np.int64).max)
    cut = np.take_along_axis(np.sort(tied, axis=1), need - 1, 1)
    keep = above | ((score == kth) & (index <= cut))
    return index[keep].reshape(len(index), k), score[keep].reshape(len(index), k)


class TopK:
    """Per-query top-K items of streamed score blocks (seed 003's per-class heaps, vectorised).

    Blocks are buffered and merged into the running top K whenever `merge_rows` items wait, so
    memory stays O(Q · (top_k + merge_rows)) whatever the number of items.

    Args:
        query_ids: (Q,) the queries of the score columns.
        top_k: items kept per query.
        merge_rows: items buffered before a merge (None: as many as fit in `PENDING_VALUES` scores).
    """

    def __init__(self, query_ids: Sequence, top_k: int, merge_rows: int | None = None):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.query_ids = np.asarray(query_ids)
        self.top_k = int(top_k)
        self.merge_rows = merge_rows or max(1, PENDING_VALUES // max(len(self.query_ids), 1))
        self.rows = 0
        Q = len(self.query_ids)
        self._index, self._score = np.zeros((Q, 0), np.int64), np.zeros((Q, 0), np.float32)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def add(self, scores: np.ndarray) -> None:
        """scores float (B, Q): the next B items (they get indices rows .. rows + B - 1)."""
        scores = np.asarray(scores, np.float32)
        if scores.ndim != 2 or scores.shape[1] != len(self.query_ids):
            raise ValueError(f"scores must be (B, {len(self.query_ids)}), got {scores.shape}")
        if np.isnan(scores).any():
            raise ValueError("scores contain NaN")
        self._pending.append(scores)
        self._pending_rows += len(scores)
        if self._pending_rows >= self.merge_rows:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        block = np.concatenate(self._pending).T  # (B, Q) -> (Q, B)
        new_index = np.broadcast_to(np.arange(self.rows, self.rows + block.shape[1]), block.shape)
        self.rows += block.shape[1]
        self._pending, self._pending_rows = [], 0
        index = np.concatenate([self._index, new_index], 1)
        score = np.concatenate([self._score, block], 1)
        self._index, self._score = _keep_top(index, score, self.top_k)

    def result(self) -> Ranking:
        """The ranking of every item added so far (ties: lower item index first)."""
        self._merge()
        index, score = sort_rows(self._index, self._score, self.top_k)
        return Ranking(self.query_ids.copy(), index, score)


def top_k(scores: np.ndarray, k: int, query_ids: Sequence | None = None) -> Ranking:
    """Rank a whole (Q, N) score matrix: each query's k best items (ties: lower item index first).

    Args:
        scores: (Q, N) float, query × item (e.g. text × image similarities).
        query_ids: (Q,) ids of the rows (None: 0..Q-1).
    """
    scores = np.asarray(scores, np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (queries, items), got {scores.shape}")
    top = TopK(
        np.arange(len(scores)) if query_ids is None else query_ids, k, merge_rows=max(1, scores.shape[1])
    )
    top.add(scores.T)
    return top.result()


def _vote(rank: np.ndarray, weight: float, w0: float) -> np.ndarray:
    return weight * w0 / (rank + w0)


def rank_vote(
    rankings: Sequence[Ranking],
    weights: Sequence[float] | None = None,
    *,
    rank_decay: float,
    top_k: int | None = None,
) -> Ranking:
    """Seed 003's rank-based weighted vote over ranked lists (SPEC §4.7, `Ensemble.ipynb`).

    An item at 0-based rank i of list m gets `w_m · w0 / (i + w0)`; votes are summed over the lists
    and each query keeps its top_k items by total (ties: lower item index first). Every ranking
    must index the same item id list (see `align_rankings`) and rank the same queries.

    Args:
        weights: one per ranking (None: equal weights, as for TTA views).
        rank_decay: w0 (clipped below at 1e-6: w0 = 0 would make the top vote 0/0).
        top_k: items kept per query (None: all).
    """
    weights = [1.0] * len(rankings) if weights is None else [float(w) for w in weights]
    if len(weights) != len(rankings) or not rankings:
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    w0 = max(float(rank_decay), MIN_RANK_DECAY)
    query_ids = rankings[0].query_ids
    rows = [r.rows_of(query_ids) for r in rankings]
    out_index, out_score = [], []
    for q in range(len(query_ids)):
        idx, vote = [], []
        for ranking, row, w in zip(rankings, rows, weights):
            items = ranking.index[row[q]]
            items = items[items >= 0]
            idx.append(items)
            vote.append(_vote(np.arange(len(items)), w, w0))
        unique, inverse = np.unique(np.concatenate(idx), return_inverse=True)
        total = np.bincount(inverse, weights=np.concatenate(vote), minlength=len(unique))
        order = np.lexsort((unique, -total))[:top_k]
        out_index.append(unique[order])
        out_score.append(total[order])
    width = max((len(r) for r in out_index), default=0)
    index = np.full((len(query_ids), width), -1, np.int64)
    score = np.zeros((len(query_ids), width), np.float32)
    for q, (i, s) in enumerate(zip(out_index, out_score)):
        index[q, : len(i)], score[q, : len(s)] = i, s
    return Ranking(np.asarray(query_ids).copy(), index, score)


def rank_vote_scores(
    ranks: Sequence[np.ndarray], weights: Sequence[float], rank_decay: float
) -> tuple[np.ndarray, np.ndarray]:
    """`rank_vote`'s total of some (query, item) entries, from each entry's rank in each list.

    Args:
        ranks: per list, (E,) int 0-based rank of each entry in its query's list (-1: absent).
        weights: one per list; rank_decay: w0 (clipped below at 1e-6).

    Returns:
        score (E,) float64 summed votes, present (E,) bool (ranked by at least one list).
    """
    if len(ranks) != len(weights):
        raise ValueError(f"{len(ranks)} rankings but {len(weights)} weights")
    w0 = max(float(rank_decay), MIN_RANK_DECAY)
    size = len(ranks[0]) if len(ranks) else 0
    score = np.zeros(size)
    for r, w in zip(ranks, weights):
        score += np.where(r >= 0, _vote(np.maximum(r, 0), float(w), w0), 0.0)
    present = np.any([r >= 0 for r in ranks], axis=0) if len(ranks) else np.zeros(size, bool)
    return score, present


@dataclass
class ShiftRankings:
    """One model's rankings of the same queries under several test-time views (yt8m: frame shifts).

    `merged()` is seed 003's `combine_tta`: an equal-weight rank vote with w0 = `rank_decay`
    (3.72384689385059). As an array it is the (H, Q, K) stack of the views' scores (zero-padded).

    Attributes:
        shifts: (H,) the view of each ranking (yt8m: the frame shift).
        rankings: H rankings of the same queries, indexing one item id list.
    """

    shifts: tuple[int, ...]
    rankings: list[Ranking]
    rank_decay: float = TTA_RANK_DECAY

    def __post_init__(self):
        if len(self.shifts) != len(self.rankings) or not self.rankings:
            raise ValueError(f"{len(self.shifts)} shifts but {len(self.rankings)} rankings")

    @property
    def query_ids(self) -> np.ndarray:
        return self.rankings[0].query_ids

    def padded(self, name: str) -> np.ndarray:
        """(H, Q, K) stack of the views' `index` (padded with -1) or `score` (padded with 0)."""
        if name not in ("index", "score"):
            raise ValueError(f"unknown field {name!r}; valid choices: index, score")
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
        return (len(self.shifts), self.rankings[0].shape[0], max(r.shape[1] for r in self.rankings))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        score = self.padded("score")
        return score if dtype is None else score.astype(dtype)

    def merged(self, top_k: int | None = None) -> Ranking:
        """The views' equal-weight rank vote, top_k items per query (None: all; one view: that ranking)."""
        if len(self.rankings) == 1:
            return self.rankings[0]
        return rank_vote(self.rankings, rank_decay=self.rank_decay, top_k=top_k)


def merge_parts(
    parts: Sequence[ShiftRankings], sizes: Sequence[int], top_k: int, *, by: str = "rank"
) -> ShiftRankings:
    """One model's rankings from parts that rank disjoint item lists (the folds' out-of-fold parts;
    part p indexes its own `sizes[p]` items, the parts' items concatenated in order): per view and
    query, the parts' lists interleaved by relative rank (i + ½) / n (`by="rank"`: parts scored by
    differently calibrated models) or by their scores (`by="score"`), `top_k` kept."""
    if by not in ("rank", "score"):
        raise ValueError(f"unknown merge {by!r}; valid choices: rank, score")
    shifts, queries = parts[0].shifts, parts[0].query_ids
    if any(p.shifts != shifts or not np.array_equal(p.query_ids, queries) for p in parts):
        raise ValueError("the parts differ in views (TTA shifts) or queries (classes)")
    offsets, index = np.cumsum([0, *sizes]), [p.padded("index") for p in parts]
    if by == "rank":
        keys = [
            1.0 - (np.arange(i.shape[-1]) + 0.5) / np.maximum((i >= 0).sum(-1, keepdims=True), 1)
            for i in index
        ]
        score = np.concatenate(keys, 2).astype(np.float32)
    else:
        score = np.concatenate([p.padded("score") for p in parts], 2)
    index = np.concatenate([np.where(i >= 0, i + o, -1) for i, o in zip(index, offsets)], 2)
    merged = [sort_rows(index[h], score[h], top_k) for h in range(len(shifts))]
    return ShiftRankings(shifts, [Ranking(queries, i, s) for i, s in merged])


def align_rankings(predictions: Sequence[tuple[Sequence, Ranking]]) -> tuple[list, list[Ranking]]:
    """Re-index several models' (item ids, ranking) onto one id list: the first model's ids, then new ones.

    Returns:
        (item ids, rankings whose `index` points into them).
    """
    ids: list = []
    position: dict = {}
    out = []
    for model_ids, ranking in predictions:
        local = np.empty(len(model_ids), np.int64)
        for j, item in enumerate(model_ids):
            if item not in position:
                position[item] = len(ids)
                ids.append(item)
            local[j] = position[item]
        index = np.where(ranking.index >= 0, local[np.maximum(ranking.index, 0)], -1)
        out.append(Ranking(ranking.query_ids, index, ranking.score))
    return ids, out
