"""Video–text retrieval and video QA metrics as ALPRO computes them (SPEC §2.4, §2.5).

Retrieval (`salesforce/ALPRO@4ff6163:src/tasks/run_video_retrieval.py`): every query row of a score
matrix is sorted descending; R@K = 100 · (rows whose ground truth is in the first K) / rows;
medianR and meanR are the median and mean of the **1-indexed** ground-truth rank. Text→video uses
the (texts, videos) matrix, video→text its transpose.

Ties (ALPRO's scores are ITM probabilities rounded to 4 decimals, so ties happen) are resolved by
`ties`: `stable` (default): a tied candidate ranks above the ground truth only if it comes earlier
in the gallery, i.e. the position in a stable descending sort (what `torch.sort` gives on CPU for
ALPRO, not guaranteed on GPU); `optimistic`: the ground truth wins every tie (rank = 1 + #strictly
higher); `pessimistic`: it loses every tie (rank = #candidates scoring ≥ it).

Several ground truths per query (video→text with several captions per video): the best-ranked one
counts (`v2t="best"`, as mmaction2 and CLIP4Clip). ALPRO inverts its caption→video dict, so only the
**last** caption of each video is its ground truth: `v2t="alpro"` reproduces that.

QA (`src/datasets/dataset_video_qa.py: evaluate_qa`): accuracy of the predicted answer string against
the ground-truth string, overall and per answer type (what/who/how/where/when), plus each type's
share of questions. A ground-truth answer outside the training answer vocabulary is always wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vmmlib.ranking import top_k

TIES = ("stable", "optimistic", "pessimistic")
V2T_MODES = ("best", "alpro")
QA_TYPES = ("what", "who", "how", "where", "when")
CLIP_REDUCTIONS = ("mean", "max")


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D (queries, candidates) matrix, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def gt_ranks(
    scores: np.ndarray, gt: Sequence[int] | Sequence[Sequence[int]], ties: str = "stable"
) -> np.ndarray:
    """1-indexed rank of each query's best-ranked ground-truth candidate.

    Args:
        scores: float (Q, C), higher = more relevant.
        gt: for each query, one candidate index or a non-empty list of them.
        ties: `stable`, `optimistic` or `pessimistic` (module docstring).

    Returns:
        int64 (Q,) ranks in [1, C].
    """
    if ties not in TIES:
        raise ValueError(f"unknown ties {ties!r}; valid choices: {', '.join(TIES)}")
    scores = _check_scores(scores)
    Q, C = scores.shape
    if len(gt) != Q:
        raise ValueError(f"{len(gt)} ground truths for {Q} queries")
    rows, cols = [], []
    for q, g in enumerate(gt):
        g = [int(g)] if np.ndim(g) == 0 else [int(c) for c in g]
        if not g:
            raise ValueError(f"query {q} has no ground truth")
        bad = [c for c in g if not 0 <= c < C]
        if bad:
            raise ValueError(f"query {q}: ground-truth index {bad[0]} outside [0, {C})")
        rows += [q] * len(g)
        cols += g
    rows, cols = np.asarray(rows), np.asarray(cols)
    gt_score = scores[rows, cols][:, None]  # (G, 1)
    higher = (scores[rows] > gt_score).sum(1)
    tied = scores[rows] == gt_score
    if ties == "optimistic":
        rank = higher + 1
    elif ties == "pessimistic":
        rank = higher + tied.sum(1)
    else:
        rank = higher + (tied & (np.arange(C) < cols[:, None])).sum(1) + 1
    best = np.full(Q, C + 1, dtype=np.int64)
    np.minimum.at(best, rows, rank)
    return best


def rank_metrics(
    ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10), *, scale: float = 100.0
) -> dict[str, float]:
    """ALPRO's summary of 1-indexed ranks: r{K} = scale · mean(rank ≤ K) (100: percent, 1: fractions),
    medianR, meanR, and queries. The one ranks → recall@K function: MUGE's `recall_at_k` and
    `gallery_recall` (through `metrics.muge.recall_from_ranks`), avfusion's scores and its submission
    scorer call it."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no queries to score")
    out = {f"r{k}": float(scale * np.mean(ranks <= k)) for k in ks}
    out["medianR"] = float(np.median(ranks))
    out["meanR"] = float(np.mean(ranks))
    out["queries"] = int(ranks.size)
    return out


def retrieval_metrics(
    scores: np.ndarray, gt: Sequence[int] | Sequence[Sequence[int]], ties: str = "stable", ks=(1, 5, 10)
) -> dict[str, float]:
    """R@K (percent), medianR, meanR (1-indexed) of one retrieval direction. See `gt_ranks`."""
    return rank_metrics(gt_ranks(scores, gt, ties), ks)


def video_to_text_gt(text_to_video: Sequence[int], num_videos: int, v2t: str = "best") -> list[list[int]]:
    """Each video's ground-truth captions from the caption → video map.

    `best`: all its captions; `alpro`: only the last one (ALPRO's inverted dict). A video without a
    caption gets an empty list (it cannot be a video→text query).
    """
    if v2t not in V2T_MODES:
        raise ValueError(f"unknown v2t {v2t!r}; valid choices: {', '.join(V2T_MODES)}")
    captions: list[list[int]] = [[] for _ in range(num_videos)]
    for t, v in enumerate(text_to_video):
        if not 0 <= int(v) < num_videos:
            raise ValueError(f"caption {t} points to video {v} outside [0, {num_videos})")
        captions[int(v)].append(t)
    if v2t == "alpro":
        captions = [c[-1:] for c in captions]
    return captions


def text_video_retrieval(
    sim: np.ndarray, text_to_video: Sequence[int], *, ties: str = "stable", v2t: str = "best"
) -> dict[str, dict[str, float]]:
    """Text→video and video→text metrics from one (texts, videos) score matrix.

    Args:
        sim: float (T, V): score of caption t against video v (contrastive similarity, ITM
            probability, or a re-ranked matrix from `rerank_top_k`).
        text_to_video: (T,) the ground-truth video index of every caption.
        ties, v2t: see the module docstring. Videos without a caption are left out of video→text
            (its `queries` says how many were scored).

    Returns:
        {"text2video": {...}, "video2text": {...}}, each with r1, r5, r10, medianR, meanR, queries.
    """
    sim = _check_scores(sim)
    t2v = retrieval_metrics(sim, list(text_to_video), ties)
    captions = video_to_text_gt(text_to_video, sim.shape[1], v2t)
    queries = [v for v, c in enumerate(captions) if c]
    v2t_metrics = retrieval_metrics(sim.T[queries], [captions[v] for v in queries], ties)
    return {"text2video": t2v, "video2text": v2t_metrics}


def rerank_top_k(
    sim: np.ndarray, k: int, scorer: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Re-rank each query's top-k candidates (by `sim`) with a second scorer, e.g. an ITM head.

    ALPRO scores all (text, video) pairs with its ITM head, which is quadratic in the test set; this
    scores only k per query and keeps the contrastive order below them.

    Args:
        sim: float (Q, C) first-stage scores (e.g. contrastive similarity, texts × videos).
        k: candidates per query to re-score.
        scorer: called once as `scorer(query_idx, candidate_idx)` with two int64 (Q·k,) arrays; returns
            (Q·k,) scores, higher = better (e.g. the ITM positive-class probability).

    Returns:
        float64 (Q, C): a matrix whose per-row order is the top-k by the scorer (ties: lower index
        first), then every other candidate in `sim` order. Feed it to `text_video_retrieval`; for the
        other direction re-rank `sim.T` with the scorer's arguments swapped.
    """
    sim = _check_scores(sim)
    top = top_k(sim, k).index  # (Q, k), best first, ties: lower index first
    rows = np.repeat(np.arange(sim.shape[0]), top.shape[1])
    new = np.asarray(scorer(rows, top.reshape(-1)), dtype=np.float64).reshape(-1)
    if new.shape != rows.shape:
        raise ValueError(f"scorer returned {new.shape} scores for {rows.shape[0]} pairs")
    if np.isnan(new).any():
        raise ValueError("scorer returned NaN")
    out = sim.copy()
    if new.size:
        out[rows, top.reshape(-1)] = new - new.min() + sim.max() + 1.0  # above every other candidate
    return out


def aggregate_clip_scores(scores: np.ndarray, reduce: str = "mean") -> np.ndarray:
    """Combine the scores of several test-time clips per video (ALPRO's `score_agg_func`).

    Args:
        scores: float (num_clips, Q, C), one score matrix per clip.
        reduce: `mean` or `max` over the clips.
    """
    if reduce not in CLIP_REDUCTIONS:
        raise ValueError(f"unknown clip reduction {reduce!r}; valid choices: {', '.join(CLIP_REDUCTIONS)}")
    scores = np.asarray(scores, dtype=np.float64)
    return scores.mean(0) if reduce == "mean" else scores.max(0)


def qa_accuracy(
    pred_answers: Sequence[str],
    gt_answers: Sequence[str],
    answer_types: Sequence[str] | None = None,
    types: Sequence[str] = QA_TYPES,
) -> dict:
    """Open-ended video-QA accuracy, ALPRO's `evaluate_qa` in percent.

    Args:
        pred_answers: predicted answer strings (vocabulary labels mapped back to strings).
        gt_answers: ground-truth answer strings (may lie outside the answer vocabulary: then wrong).
        answer_types: each question's type; None reports only the overall accuracy.
        types: the types always reported (a type with no question gets accuracy 0, as ALPRO);
            types found in `answer_types` beyond these are reported after them.

    Returns:
        {"overall_acc": %, "<type>_acc": %, ..., "ratios": {"<type>_ratio": [% of questions, count]}}.
    """
    pred, gt = np.asarray(pred_answers, dtype=object), np.asarray(gt_answers, dtype=object)
    if len(pred) != len(gt):
        raise ValueError(f"{len(pred)} predictions for {len(gt)} questions")
    if len(gt) == 0:
        raise ValueError("no questions to score")
    correct = pred == gt
    out: dict = {"overall_acc": float(100.0 * correct.mean())}
    if answer_types is None:
        return out
    kinds = np.asarray(answer_types, dtype=object)
    if len(kinds) != len(gt):
        raise ValueError(f"{len(kinds)} answer types for {len(gt)} questions")
    extra = sorted(set(kinds.tolist()) - set(types))
    ratios = {}
    for kind in [*types, *extra]:
        sel = kinds == kind
        out[f"{kind}_acc"] = float(100.0 * correct[sel].mean()) if sel.any() else 0.0
        ratios[f"{kind}_ratio"] = [float(100.0 * sel.mean()), int(sel.sum())]
    out["ratios"] = ratios
    return out
