"""MUGE recall: the official semantics on analytic cases, gallery ranks against a slow stable-sort
reference with ties, identical embeddings. (The submission file against Chinese-CLIP's evaluators:
tests/submissions/test_muge.py.)"""

import numpy as np
import pytest

from vmmlib.metrics.muge import (
    gallery_ranks,
    gallery_recall,
    in_batch_accuracy,
    positives_by_column,
    recall_at_k,
    transpose_truth,
)


def test_a_hit_is_any_ground_truth_in_the_first_k_and_every_reference_query_counts():
    truth = {1: [5], 2: [7, 8], 3: [9], 4: []}
    preds = {
        1: [5, 0, 1, 2, 3, 4, 6, 10, 11, 12],  # rank 1
        2: [0, 1, 2, 3, 8, 4, 5, 6, 10, 11],  # second ground truth at rank 5
        3: [0, 1, 2, 3, 4, 5, 6, 10, 11, 12],  # miss
        4: list(range(10)),  # no ground truth: a miss, still counted
    }
    scores = recall_at_k(preds, truth)
    assert scores == pytest.approx({"r1": 0.25, "r5": 0.5, "r10": 0.5, "mean_recall": 1.25 / 3})
    with pytest.raises(KeyError, match="no prediction"):
        recall_at_k({1: preds[1]}, truth)
    # image → text is the same metric on the transposed annotation (first-seen order)
    assert transpose_truth({1: [5, 6], 2: [5]}) == {5: [1, 2], 6: [1]}


def _slow_rank(row, cols):
    order = sorted(range(len(row)), key=lambda c: row[c], reverse=True)  # Python's stable sort, as make_topk
    return min(order.index(c) for c in cols) if cols else len(row)


def test_gallery_ranks_match_a_stable_sort_reference_with_ties():
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 4, (30, 25)).astype(np.float32)  # many ties
    positives = [list(rng.choice(25, rng.integers(0, 3), replace=False)) for _ in range(30)]
    ranks = gallery_ranks(sim, positives, chunk=7)
    assert ranks.tolist() == [_slow_rank(list(row), cols) for row, cols in zip(sim, positives)]
    scores = gallery_recall(sim, positives)
    assert scores["r5"] == pytest.approx(
        np.mean([_slow_rank(list(r), c) < 5 for r, c in zip(sim, positives)])
    )


def test_identical_embeddings_give_perfect_recall_both_ways():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(50, 16))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    sim = feats @ feats.T
    diagonal = [[i] for i in range(50)]
    for s in (sim, sim.T):
        scores = gallery_recall(s, diagonal)
        assert scores["r1"] == scores["mean_recall"] == 1.0 and scores["median_rank"] == 1.0
    assert gallery_recall(-sim, diagonal)["r10"] == 0.0
    assert in_batch_accuracy(sim) == {"i2t_in_batch_acc": 1.0, "t2i_in_batch_acc": 1.0}
    assert positives_by_column([[11], [10, 12]], [10, 11, 12]) == [[1], [0, 2]]
    with pytest.raises(KeyError, match="gallery"):
        positives_by_column([[99]], [10, 11])
