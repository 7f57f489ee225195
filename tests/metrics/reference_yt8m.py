"""A slow, obvious YouTube-8M metric reference for the tests, written from the metric definitions
(SPEC §2.3): one plain Python loop per definition, no vectorisation, nothing shared with vmmlib.

Definitions used:

- AP of a ranking with `num_positives` positives in all, cut at rank n (None: no cut):
  numpos = min(num_positives, n) when n is set; AP = 0 when numpos = 0; otherwise
  AP = Σ over ranks i = 1..min(len, n) whose item is positive (actual > 0) of (positives up to i / i) / numpos.
- GAP@k: each video keeps its k highest scores (which of several tied scores at the cut is kept is
  `np.argpartition(row, -k)[-k:]`'s choice, as in the official evaluator); every kept (score, label)
  is ranked in one list; num_positives = Σ of all labels, kept or not.
- Per-class AP: the same over one class's kept scores, num_positives = Σ of that class's labels;
  classes whose labels sum to 0 are left out of the mean (mAP).
- Hit@1: the label at each video's highest score (the first class on ties), averaged over videos.
- PERR: per video with L = int(Σ labels) > 0, the labels of its L highest scores (argpartition's
  choice on ties) that are scored > 0, summed and divided by L; a video without labels scores 0.
- Segment mAP: per submitted class with a rated positive, the ids cut to the first top_n, then
  unrated ids dropped, ranked in submission order; num_positives = rated positives of the class;
  mean over those classes.

Tie order (the official evaluator's behaviour, stated as a rule; test_yt8m.py pins it with
hand-derived literals that do not use this module): the list ranked is the (score, actual) pairs in
the order given (`ap_at_n`), or for an accumulating calculator (GAP, per-class AP) the array a binary
min-heap holds after the pairs were pushed in push order (Python's heapq, tuples compared by score,
then actual). That list is permuted so that its item `random.Random(0).sample(range(n), n)[j]` comes
j-th, then sorted by score, descending, keeping that order among equal scores.
"""

import heapq
import random

import numpy as np


def ranking_ap(ranked_actuals, num_positives, n=None) -> float:
    """AP of actuals given in rank order (best first)."""
    if n is not None:
        num_positives = min(num_positives, n)
    if num_positives == 0:
        return 0.0
    total, found = 0.0, 0
    for rank, actual in enumerate(ranked_actuals, start=1):
        if n is not None and rank > n:
            break
        if actual > 0:
            found += 1
            total += found / rank / num_positives
    return total


def official_ranking(pairs, *, heap: bool) -> list:
    """The (score, actual) pairs in the order the official evaluator ranks them (see the module doc)."""
    pairs = [(float(s), float(a)) for s, a in pairs]
    if heap:
        held = []
        for pair in pairs:
            heapq.heappush(held, pair)
        pairs = held
    drawn = random.Random(0).sample(range(len(pairs)), len(pairs))
    return sorted((pairs[j] for j in drawn), key=lambda pair: pair[0], reverse=True)


def ap_at_n(scores, actuals, n=None, total_num_positives=None) -> float:
    """AP of one list of scores; num_positives defaults to the count of actuals > 0."""
    if total_num_positives is None:
        total_num_positives = sum(1 for a in actuals if a > 0)
    ranked = official_ranking(zip(scores, actuals), heap=False)
    return ranking_ap([a for _, a in ranked], total_num_positives, n)


def kept_classes(row, k: int) -> list[int]:
    """The classes one video keeps for GAP / mAP: its top k, ascending."""
    k = min(k, len(row))
    return sorted(np.argpartition(row, -k)[-k:].tolist())


def gap(predictions, labels, top_k=20, batch_size=None) -> float:
    """GAP@top_k. Push order: class by class, videos in order within a class; with `batch_size`,
    that order within each consecutive batch of videos, batch after batch."""
    videos = len(predictions)
    batch_size = batch_size or max(videos, 1)
    kept = [kept_classes(predictions[v], top_k) for v in range(videos)]
    pushed = []
    for first in range(0, videos, batch_size):
        batch = range(first, min(first + batch_size, videos))
        for c in range(predictions.shape[1]):
            pushed += [(predictions[v][c], labels[v][c]) for v in batch if c in kept[v]]
    if not pushed:
        return 0.0
    ranked = official_ranking(pushed, heap=True)
    return ranking_ap([a for _, a in ranked], float(np.sum(labels, dtype=np.float64)))


def class_aps(predictions, labels, top_k=20) -> dict[int, float]:
    """{class: AP} for every class whose labels sum to more than 0."""
    kept = [kept_classes(row, top_k) for row in predictions]
    aps = {}
    for c in range(predictions.shape[1]):
        positives = float(np.sum(labels[:, c], dtype=np.float64))
        if positives <= 0:
            continue
        pushed = [(predictions[v][c], labels[v][c]) for v in range(len(predictions)) if c in kept[v]]
        if not pushed:
            aps[c] = 0.0
            continue
        ranked = official_ranking(pushed, heap=True)
        aps[c] = ranking_ap([a for _, a in ranked], positives)
    return aps


def hit_at_one(predictions, labels) -> float:
    hits = [float(labels[v][int(np.argmax(predictions[v]))]) for v in range(len(predictions))]
    return sum(hits) / len(hits)


def perr(predictions, labels) -> float:
    total = 0.0
    for v in range(len(predictions)):
        count = int(np.sum(labels[v], dtype=np.float64))
        if count == 0:
            continue
        top = np.argpartition(predictions[v], -count)[-count:]
        total += sum(float(labels[v][c]) for c in top if predictions[v][c] > 0) / count
    return total / len(predictions)


def segment_map(submission, truth, top_n=None) -> float:
    """Segment mAP; `truth` maps ("vid:start", class) to a rating, positive when > 0."""
    positives: dict[int, int] = {}
    for (_, label), score in truth.items():
        if score > 0:
            positives[label] = positives.get(label, 0) + 1
    aps = []
    for label in sorted(submission):
        if positives.get(label, 0) == 0:
            continue
        ids = list(submission[label])[:top_n] if top_n else list(submission[label])
        rated = [truth[(s, label)] for s in ids if (s, label) in truth]
        aps.append(ranking_ap(rated, positives[label]))
    return sum(aps) / len(aps) if aps else float("nan")
