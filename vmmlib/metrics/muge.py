"""MUGE / Chinese-CLIP retrieval metrics: recall@1/5/10 and mean recall (SPEC §2.4, §9.2).

- `recall_at_k`: the official evaluator's semantics (`cn_clip/eval/evaluation.py`): every query of
  the reference counts; a query is a hit at K if **any** of its ground-truth ids is among the first
  K of its 10 predictions; R@K = hits / #reference queries; mean recall = (R@1 + R@5 + R@10) / 3.
  Fractions here; the evaluator prints them × 100 (`vmmlib.submissions.muge.evaluate` does too).
  Image→text is the same function on the transposed annotation (`transpose_truth`, as
  `transform_ir_annotation_to_tr.py` builds it for `evaluation_tr.py`).
- `gallery_ranks` / `gallery_recall`: recall over the whole gallery from a similarity matrix, for
  validation during training. Ranks follow `make_topk_predictions`: a stable descending sort, so
  among equal scores the earlier gallery column ranks first.
- `in_batch_accuracy`: the top-1 accuracy within one batch that Chinese-CLIP logs as its
  validation (Chinese-CLIP#28); named apart, it is not recall over the gallery
  (`batched_in_batch_accuracy`: over consecutive batches of validation pairs).
- From features, in bounded memory (chunks of queries against the whole gallery): `feature_ranks`
  (+ `recall_from_ranks`), `retrieval_scores` (text→image and image→text recall at once, with
  `positive_columns`), `similarity_top_k` (exact top-k by dot product, the same ranking as a
  full-matrix stable argsort).

Pure numpy; no torch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

KS = (1, 5, 10)


def recall_at_k(
    predictions: Mapping[Hashable, Sequence[Hashable]],
    truth: Mapping[Hashable, Sequence[Hashable]],
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Official MUGE recall of top-10 predictions.

    Args:
        predictions: {query id: ranked predicted ids} (10 each in a valid submission).
        truth: {query id: ground-truth ids}; every key is a reference query (a query with no
            ground truth counts as a miss, as upstream).

    Returns:
        {"r1", "r5", "r10", "mean_recall"} as fractions (keys follow `ks`; mean over them).

    Raises:
        KeyError: a reference query has no prediction (the official evaluator refuses the file).
    """
    missing = [q for q in truth if q not in predictions]
    if missing:
        raise KeyError(f"{len(missing)} reference quer(ies) have no prediction, e.g. {missing[0]!r}")
    depth = max(ks)  # a query's 0-based first hit in its top `depth`; `depth`: a miss at every K
    ranks = [
        next((i for i, p in enumerate(list(predictions[query])[:depth]) if p in set(gold)), depth)
        for query, gold in truth.items()
    ]
    out = recall_from_ranks(np.asarray(ranks, np.int64), ks)  # the one ranks -> recall@K
    return {k: out[k] for k in (*(f"r{k}" for k in ks), "mean_recall")}


def transpose_truth(truth: Mapping[Hashable, Sequence[Hashable]]) -> dict[Hashable, list[Hashable]]:
    """Text→image annotation {text_id: image_ids} → image→text {image_id: text_ids}, first-seen order."""
    out: dict[Hashable, list[Hashable]] = {}
    for text_id, image_ids in truth.items():
        for image_id in image_ids:
            out.setdefault(image_id, []).append(text_id)
    return out


def gallery_ranks(sim: np.ndarray, positives: Sequence[Sequence[int]], chunk: int = 4096) -> np.ndarray:
    """0-based rank of each query's best-ranked positive in its row of `sim`.

    Args:
        sim: (Q, G) similarities of Q queries to a gallery of G items.
        positives: for each query, the gallery columns of its ground truth.
        chunk: (query, positive) pairs compared at once (bounds memory to chunk × G).

    Returns:
        (Q,) int64; a query without positives gets G (never a hit). Ties: a stable descending sort,
        so an equal score in an earlier column ranks first.
    """
    sim = np.asarray(sim)
    Q, G = sim.shape
    if len(positives) != Q:
        raise ValueError(f"{len(positives)} positive lists for {Q} queries")
    queries = np.array([q for q, cols in enumerate(positives) for _ in cols], dtype=np.int64)
    cols = np.array([c for cs in positives for c in cs], dtype=np.int64)
    if len(cols) and (cols.min() < 0 or cols.max() >= G):
        raise ValueError(f"positive columns must lie in [0, {G}), got {cols.min()}..{cols.max()}")
    ranks = np.full(Q, G, dtype=np.int64)
    position = np.arange(G)
    for s in range(0, len(cols), chunk):
        q, c = queries[s : s + chunk], cols[s : s + chunk]
        rows = sim[q]  # (P, G)
        score = rows[np.arange(len(q)), c][:, None]  # (P, 1)
        rank = (rows > score).sum(1) + ((rows == score) & (position < c[:, None])).sum(1)
        np.minimum.at(ranks, q, rank)
    return ranks


def gallery_recall(
    sim: np.ndarray, positives: Sequence[Sequence[int]], ks: Sequence[int] = KS, chunk: int = 4096
) -> dict[str, float]:
    """Recall@K over the whole gallery and mean recall (fractions), plus median and mean rank (1-based).

    Args:
        sim: (Q, G) query × gallery similarities (text→image: texts × images; image→text: transpose).
        positives: per query, its ground-truth gallery columns.

    Returns:
        {"r1", "r5", "r10", "mean_recall", "median_rank", "mean_rank"}.
    """
    return recall_from_ranks(gallery_ranks(sim, positives, chunk), ks)


def positives_by_column(
    query_truth: Sequence[Sequence[Hashable]], gallery_ids: Sequence[Hashable]
) -> list[list[int]]:
    """Ground-truth ids per query → their gallery columns (ids absent from the gallery raise KeyError)."""
    column = {g: i for i, g in enumerate(gallery_ids)}
    missing = [g for gold in query_truth for g in gold if g not in column]
    if missing:
        raise KeyError(f"{len(missing)} ground-truth id(s) are not in the gallery, e.g. {missing[0]!r}")
    return [[column[g] for g in gold] for gold in query_truth]


def in_batch_accuracy(sim: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy of the matching pairs within one (B, B) image × text batch (argmax: first wins).

    Returns:
        {"i2t_in_batch_acc", "t2i_in_batch_acc"} as fractions.
    """
    sim = np.asarray(sim)
    target = np.arange(sim.shape[0])
    return {
        "i2t_in_batch_acc": float((sim.argmax(1) == target).mean()),
        "t2i_in_batch_acc": float((sim.argmax(0) == target).mean()),
    }


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """`gallery_recall`'s dict from (Q,) 0-based best-positive ranks (G: never a hit)."""
    from vmmlib.metrics.retrieval import rank_metrics

    ranks = np.asarray(ranks)
    if not len(ranks):
        return {
            **{f"r{k}": 0.0 for k in ks},
            "mean_recall": 0.0,
            "median_rank": float("nan"),
            "mean_rank": float("nan"),
        }
    m = rank_metrics(ranks + 1, ks, scale=1.0)
    out = {f"r{k}": m[f"r{k}"] for k in ks}
    out["mean_recall"] = float(np.mean([out[f"r{k}"] for k in ks]))
    return {**out, "median_rank": m["medianR"], "mean_rank": m["meanR"]}


def feature_ranks(
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    positives: Sequence[Sequence[int]],
    chunk: int = 1024,
) -> np.ndarray:
    """`gallery_ranks` of the similarity matrix Q Gᵀ, computed `chunk` queries at a time.

    Args:
        query_features: (Q, E); gallery_features: (G, E) (similarity = dot product).
        positives: per query, its ground-truth gallery columns.
        chunk: queries per matrix product (memory: chunk × G scores).

    Returns:
        (Q,) int64 0-based rank of each query's best positive (G when it has none).
    """
    query_features = np.asarray(query_features, np.float32)
    gallery_features = np.asarray(gallery_features, np.float32)
    parts = [
        gallery_ranks(query_features[s : s + chunk] @ gallery_features.T, positives[s : s + chunk])
        for s in range(0, len(query_features), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _rows_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best columns of a (c, G) score block, (score desc, column asc), in ~9 bytes per score."""
    from vmmlib.ranking import sort_rows

    neg = np.negative(scores)  # (c, G) copy, partitioned in place
    neg.partition(k - 1, axis=1)
    kth = -neg[:, k - 1 : k]  # (c, 1) k-th largest score
    del neg
    rows, cols = np.nonzero(scores >= kth)  # every candidate, ties at the k-th score included
    counts = np.bincount(rows, minlength=len(scores))
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    index = np.full((len(scores), counts.max(initial=0)), -1, np.int64)
    score = np.zeros(index.shape, np.float32)
    index[rows, slot], score[rows, slot] = cols, scores[rows, cols]
    return sort_rows(index, score, k)


def similarity_top_k(
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    k: int = 10,
    *,
    query_ids: Sequence | None = None,
    chunk: int = 128,
):
    """Each query's k most similar gallery items by exact dot product, `chunk` queries at a time.

    Memory stays O(chunk · G) whatever the number of queries (about 9 bytes per score of a chunk:
    a 100k-image gallery at chunk 128 takes ~115 MB), unlike a full (Q, G) matrix and its argsort.
    Ties: the lower gallery index first (a stable descending sort, as Chinese-CLIP's
    `make_topk_predictions`).

    Args:
        query_features: (Q, E); gallery_features: (G, E).
        query_ids: (Q,) row ids of the returned ranking (None: 0..Q-1).

    Returns:
        `vmmlib.ranking.Ranking` with index (Q, min(k, G)) into the gallery and the scores.
    """
    from vmmlib.ranking import Ranking

    query_features = np.asarray(query_features, np.float32)
    gallery_features = np.asarray(gallery_features, np.float32)
    k = min(int(k), len(gallery_features))
    ids = np.arange(len(query_features)) if query_ids is None else np.asarray(query_ids)
    if k == 0 or not len(query_features):
        return Ranking(ids, np.zeros((len(ids), k), np.int64), np.zeros((len(ids), k), np.float32))
    parts = [
        _rows_top_k(query_features[s : s + chunk] @ gallery_features.T, k) for s in range(0, len(ids), chunk)
    ]
    return Ranking(ids, np.concatenate([i for i, _ in parts]), np.concatenate([v for _, v in parts]))


def positive_columns(
    truth: Sequence[Sequence], image_ids
) -> tuple[list[list[int]], list[list[int]], np.ndarray]:
    """Ground truth as matrix columns, both directions.

    Args:
        truth: per query, its ground-truth image ids (ids absent from the gallery are dropped: never a hit).
        image_ids: (G,) the gallery's ids, in column order.

    Returns:
        text→image positive columns per query; image→text positive query rows per image some
        query points to (the evaluator's transposed annotation); those images' columns (I,).
    """
    column = {v: j for j, v in enumerate(np.asarray(image_ids).tolist())}
    t2i = [[column[i] for i in gold if i in column] for gold in truth]
    by_image: dict[int, list[int]] = {}
    for q, cols in enumerate(t2i):
        for c in cols:
            by_image.setdefault(c, []).append(q)
    cols = np.array(sorted(by_image), np.int64)
    return t2i, [by_image[c] for c in cols], cols


def retrieval_scores(
    text_features, image_features, truth: Sequence[Sequence], image_ids, chunk: int = 1024
) -> dict:
    """Text → image recall over the whole gallery (`r1`, `r5`, `r10`, `mean_recall`, ranks) and
    image → text (`i2t_*`), from (Q, E) text and (G, E) image features."""
    t2i, i2t, image_cols = positive_columns(truth, image_ids)
    out = recall_from_ranks(feature_ranks(text_features, image_features, t2i, chunk))
    back = recall_from_ranks(feature_ranks(np.asarray(image_features)[image_cols], text_features, i2t, chunk))
    return {**out, **{f"i2t_{k}": v for k, v in back.items()}}


def batched_in_batch_accuracy(
    text_features, image_features, truth, image_ids, batch: int
) -> dict[str, float]:
    """Chinese-CLIP's logged 'validation': top-1 within batches of (first positive image, query) pairs."""
    column = {v: j for j, v in enumerate(np.asarray(image_ids).tolist())}
    pairs = [(q, column[g[0]]) for q, g in enumerate(truth) if g and g[0] in column]
    sums, n = dict.fromkeys(("i2t_in_batch_acc", "t2i_in_batch_acc"), 0.0), 0
    for s in range(0, len(pairs) - 1, batch):
        q, c = map(list, zip(*pairs[s : s + batch]))
        acc = in_batch_accuracy(np.asarray(image_features)[c] @ np.asarray(text_features)[q].T)
        sums = {k: sums[k] + v * len(q) for k, v in acc.items()}
        n += len(q)
    return {k: v / max(n, 1) for k, v in sums.items()}
