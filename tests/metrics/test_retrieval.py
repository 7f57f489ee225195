"""Retrieval R@K / medianR / meanR and QA accuracy, checked against slow obvious references (ALPRO)."""

import numpy as np
import pytest
import torch

from vmmlib.metrics.retrieval import (
    aggregate_clip_scores,
    gt_ranks,
    qa_accuracy,
    rerank_top_k,
    retrieval_metrics,
    text_video_retrieval,
    video_to_text_gt,
)


def slow_rank(row, gt_cols, ties):
    """Position of the best ground truth after sorting candidates by hand (1-indexed)."""
    best = None
    for g in gt_cols:
        if ties == "stable":
            order = sorted(range(len(row)), key=lambda c: (-row[c], c))
            rank = order.index(g) + 1
        elif ties == "optimistic":
            rank = 1 + sum(1 for c in range(len(row)) if row[c] > row[g])
        else:
            rank = sum(1 for c in range(len(row)) if row[c] >= row[g])
        best = rank if best is None else min(best, rank)
    return best


def alpro_metrics(score_matrix, gt_col):
    """ALPRO's get_retrieval_scores + get_retrieval_metric_from_bool_matrix, re-derived (no ties)."""
    _, indices = torch.sort(torch.as_tensor(score_matrix), dim=1, descending=True)
    bool_matrix = (indices == torch.as_tensor(gt_col)[:, None]).numpy()
    _, ranks = np.where(bool_matrix)
    n = len(bool_matrix)
    return {
        "r1": 100 * bool_matrix[:, 0].sum() / n,
        "r5": 100 * bool_matrix[:, :5].sum() / n,
        "r10": 100 * bool_matrix[:, :10].sum() / n,
        "medianR": np.median(ranks + 1),
        "meanR": np.mean(ranks + 1),
    }


def test_identity_similarity_gives_perfect_recall_and_rank_one():
    m = retrieval_metrics(np.eye(12), list(range(12)))
    assert m == {"r1": 100.0, "r5": 100.0, "r10": 100.0, "medianR": 1.0, "meanR": 1.0, "queries": 12}


def test_metrics_match_alpro_bool_matrix_procedure_on_tie_free_scores():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(40, 30))
    gt = rng.integers(0, 30, 40)
    ours = retrieval_metrics(sim, gt)
    ref = alpro_metrics(sim, gt)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(float(value)), key


@pytest.mark.parametrize("ties", ["stable", "optimistic", "pessimistic"])
def test_ranks_with_many_ties_and_several_ground_truths_match_a_slow_reference(ties):
    rng = np.random.default_rng(1)
    sim = rng.integers(0, 4, size=(25, 15)).astype(float)  # heavy ties
    gt = [sorted(set(rng.integers(0, 15, rng.integers(1, 4)).tolist())) for _ in range(25)]
    ranks = gt_ranks(sim, gt, ties)
    assert ranks.tolist() == [slow_rank(sim[q].tolist(), gt[q], ties) for q in range(25)]


def test_tie_policies_on_an_all_tied_row():
    sim = np.zeros((1, 5))
    assert gt_ranks(sim, [3], "stable").tolist() == [4]
    assert gt_ranks(sim, [3], "optimistic").tolist() == [1]
    assert gt_ranks(sim, [3], "pessimistic").tolist() == [5]


def test_stable_ties_equal_the_position_in_a_stable_descending_sort():
    rng = np.random.default_rng(2)
    sim = np.round(rng.random((30, 20)), 1)  # ITM probabilities rounded, as ALPRO stores them
    gt = rng.integers(0, 20, 30)
    order = np.argsort(-sim, axis=1, kind="stable")
    expected = [int(np.flatnonzero(order[q] == gt[q])[0]) + 1 for q in range(30)]
    assert gt_ranks(sim, gt).tolist() == expected


def test_video_to_text_uses_the_best_caption_or_alpros_last_caption():
    # 3 videos; captions 0,1 -> video 0; caption 2 -> video 1; caption 3 -> video 2
    text_to_video = [0, 0, 1, 2]
    sim = np.array(
        [
            [0.9, 0.1, 0.0],
            [0.1, 0.5, 0.6],  # caption 1 of video 0 is poor
            [0.0, 0.8, 0.1],
            [0.2, 0.3, 0.7],
        ]
    )
    best = text_video_retrieval(sim, text_to_video)
    alpro = text_video_retrieval(sim, text_to_video, v2t="alpro")
    assert best["text2video"]["r1"] == pytest.approx(75.0)
    assert best["video2text"]["r1"] == pytest.approx(100.0)
    # ALPRO keeps only caption 1 for video 0; scores from video 0: 0.9, 0.1, 0.0, 0.2 -> rank 3
    assert alpro["video2text"]["meanR"] == pytest.approx((3 + 1 + 1) / 3)
    assert video_to_text_gt(text_to_video, 4) == [[0, 1], [2], [3], []]
    assert text_video_retrieval(np.ones((4, 4)), text_to_video)["video2text"]["queries"] == 3


def test_rerank_top_k_reorders_only_the_top_k_and_keeps_the_rest_below():
    sim = np.array([[0.9, 0.8, 0.7, 0.1, 0.0]])
    calls = []

    def itm(rows, cols):
        calls.append((rows.tolist(), cols.tolist()))
        return np.where(cols == 2, 0.99, 0.5)  # the scorer prefers candidate 2

    out = rerank_top_k(sim, 3, itm)
    assert calls == [([0, 0, 0], [0, 1, 2])]
    assert np.argsort(-out[0], kind="stable").tolist() == [2, 0, 1, 3, 4]
    assert gt_ranks(out, [2]).tolist() == [1]
    assert gt_ranks(out, [3]).tolist() == [4]


def test_rerank_improves_recall_when_the_scorer_knows_the_truth():
    rng = np.random.default_rng(3)
    n = 50
    sim = rng.normal(size=(n, n)) + 1.5 * np.eye(n)
    base = retrieval_metrics(sim, range(n))
    reranked = rerank_top_k(sim, 10, lambda q, c: (q == c).astype(float))
    after = retrieval_metrics(reranked, range(n))
    assert after["r1"] == pytest.approx(base["r10"])  # every truth found in the top 10 moves to rank 1
    assert after["r10"] == pytest.approx(base["r10"])


def test_clip_scores_are_averaged_or_maxed():
    scores = np.stack([np.eye(3), 3 * np.eye(3)])
    np.testing.assert_allclose(aggregate_clip_scores(scores), 2 * np.eye(3))
    np.testing.assert_allclose(aggregate_clip_scores(scores, "max"), 3 * np.eye(3))
    with pytest.raises(ValueError, match="mean, max"):
        aggregate_clip_scores(scores, "median")


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(np.eye(2), [0, 5])
    with pytest.raises(ValueError, match="stable, optimistic, pessimistic"):
        gt_ranks(np.eye(2), [0, 1], ties="random")


def test_qa_accuracy_overall_and_per_type_as_alpro():
    gt = ["dog", "man", "cat", "two", "park", "dog"]
    pred = ["dog", "woman", "cat", "two", "zoo", "cat"]
    kinds = ["what", "who", "what", "how", "where", "what"]
    out = qa_accuracy(pred, gt, kinds)
    assert out["overall_acc"] == pytest.approx(100 * 3 / 6)
    assert out["what_acc"] == pytest.approx(100 * 2 / 3)
    assert out["who_acc"] == 0.0 and out["how_acc"] == 100.0 and out["where_acc"] == 0.0
    assert out["when_acc"] == 0.0  # no "when" question: ALPRO reports 0
    assert out["ratios"]["what_ratio"] == [pytest.approx(50.0), 3]
    assert out["ratios"]["when_ratio"] == [0.0, 0]


def test_qa_accuracy_matches_a_slow_reference_and_reports_unknown_types():
    rng = np.random.default_rng(4)
    answers = np.array(["a", "b", "c", "d"])
    gt, pred = answers[rng.integers(0, 4, 200)], answers[rng.integers(0, 4, 200)]
    kinds = np.array(["what", "who", "which"])[rng.integers(0, 3, 200)]
    out = qa_accuracy(pred.tolist(), gt.tolist(), kinds.tolist())
    for kind in ("what", "who", "which"):
        idx = [i for i in range(200) if kinds[i] == kind]
        assert out[f"{kind}_acc"] == pytest.approx(100 * sum(pred[i] == gt[i] for i in idx) / len(idx))
    assert qa_accuracy(pred, gt) == {"overall_acc": pytest.approx(100 * np.mean(pred == gt))}
