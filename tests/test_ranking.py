"""`vmmlib.ranking`: per-query top-K, seed 003's rank vote, alignment by id."""

import numpy as np
import pytest

from vmmlib.ranking import (
    Ranking,
    ShiftRankings,
    TopK,
    align_rankings,
    rank_vote,
    rank_vote_scores,
    sort_rows,
    top_k,
)


def test_streamed_top_k_equals_a_stable_sort_whatever_the_block_size():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(300, 5)).astype(np.float32)  # many ties, also at the cut
    expected = np.argsort(-scores, axis=0, kind="stable")[:20].T  # ties: lower item index first
    for merge_rows in (1, 7, 64, 1000):
        top = TopK(["q0", "q1", "q2", "q3", "q4"], 20, merge_rows=merge_rows)
        for start in range(0, 300, 13):
            top.add(scores[start : start + 13])
        ranking = top.result()
        assert ranking.index.tolist() == expected.tolist(), merge_rows
        assert np.array_equal(ranking.score, np.take_along_axis(scores.T, expected, 1))
    whole = top_k(scores.T, 20, query_ids=["q0", "q1", "q2", "q3", "q4"])
    assert whole.index.tolist() == expected.tolist() and whole.query_ids.tolist()[0] == "q0"


def test_top_k_refuses_nan_and_misshapen_blocks():
    top = TopK([1, 2], 3)
    with pytest.raises(ValueError, match=r"scores must be \(B, 2\)"):
        top.add(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        top.add(np.full((1, 2), np.nan))


def test_rank_vote_sums_w0_over_rank_plus_w0_and_keeps_all_items_by_default():
    a = Ranking(np.array(["t1"]), np.array([[0, 1, 2]]), np.zeros((1, 3), np.float32))
    b = Ranking(np.array(["t1"]), np.array([[2, 3, -1]]), np.zeros((1, 3), np.float32))
    merged = rank_vote([a, b], [1.0, 2.0], rank_decay=1.0)
    # item 2: 1·1/(2+1) + 2·1/(0+1) = 2.333; item 0: 1; item 3: 2/(1+1) = 1 (ties: lower index); item 1: 0.5
    assert merged.index.tolist() == [[2, 0, 3, 1]]
    assert np.allclose(merged.score, [[7 / 3, 1.0, 1.0, 0.5]])
    assert rank_vote([a, b], [1.0, 2.0], rank_decay=1.0, top_k=2).index.tolist() == [[2, 0]]
    assert merged.to_submission(["i0", "i1", "i2", "i3"]) == {"t1": ["i2", "i0", "i3", "i1"]}
    score, present = rank_vote_scores([np.array([2, 0, -1]), np.array([0, -1, 1])], [1.0, 2.0], 1.0)
    assert np.allclose(score, [7 / 3, 1.0, 1.0]) and present.tolist() == [True, True, True]


def test_rank_vote_refuses_rankings_of_different_queries():
    a = Ranking(np.array([1, 2]), np.zeros((2, 1), np.int64), np.zeros((2, 1), np.float32))
    b = Ranking(np.array([1, 3]), np.zeros((2, 1), np.int64), np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="rankings rank different queries"):
        rank_vote([a, b], rank_decay=2.0)


def test_align_rankings_reindexes_onto_the_union_of_ids():
    a = Ranking(np.array([5]), np.array([[1, 0]]), np.array([[0.9, 0.1]], np.float32))
    b = Ranking(np.array([5]), np.array([[0, -1]]), np.array([[0.5, 0.0]], np.float32))
    ids, (ra, rb) = align_rankings([(["x", "y"], a), (["z"], b)])
    assert ids == ["x", "y", "z"] and ra.index.tolist() == [[1, 0]] and rb.index.tolist() == [[2, -1]]


def test_shift_rankings_merge_by_equal_weight_vote_and_stack_padded():
    a = Ranking(np.array([7]), np.array([[0, 1]]), np.array([[0.9, 0.2]], np.float32))
    b = Ranking(np.array([7]), np.array([[1, 0, 2]]), np.array([[0.8, 0.7, 0.1]], np.float32))
    shifts = ShiftRankings((-1, 0), [a, b], rank_decay=1.0)
    assert shifts.shape == (2, 1, 3) and shifts.padded("index").tolist() == [[[0, 1, -1]], [[1, 0, 2]]]
    assert np.asarray(shifts).shape == (2, 1, 3)
    merged = shifts.merged()
    assert merged.index.tolist() == [[0, 1, 2]] and np.allclose(merged.score, [[1.5, 1.5, 1 / 3]])
    assert shifts.merged(top_k=1).index.tolist() == [[0]]


def test_sort_rows_puts_padding_last():
    index, score = sort_rows(np.array([[-1, 3, 1]]), np.array([[9.0, 0.5, 0.5]]))
    assert index.tolist() == [[1, 3, -1]] and score.tolist() == [[0.5, 0.5, 0.0]]


def test_merge_parts_interleaves_the_parts_lists_by_relative_rank_and_offsets_their_items():
    from vmmlib.ranking import Ranking, ShiftRankings, merge_parts

    a = ShiftRankings((0,), [Ranking(np.array([7]), np.array([[1, 0]]), np.array([[0.9, 0.8]], np.float32))])
    b = ShiftRankings((0,), [Ranking(np.array([7]), np.array([[0, -1]]), np.array([[0.1, 0.0]], np.float32))])
    by_rank = merge_parts([a, b], [2, 1], top_k=3).rankings[0]
    assert by_rank.index.tolist() == [[1, 2, 0]]  # keys 1 - (i + ½) / n: a 0.75, 0.25; b (offset 2) 0.5
    by_score = merge_parts([a, b], [2, 1], top_k=3, by="score").rankings[0]
    assert by_score.index.tolist() == [[1, 0, 2]]
    with pytest.raises(ValueError, match="differ in views"):
        merge_parts([a, ShiftRankings((1,), b.rankings)], [2, 1], top_k=3)
