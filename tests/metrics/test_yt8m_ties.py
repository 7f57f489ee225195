"""The official YouTube-8M tie order, pinned by small cases whose expected values were derived by hand.

The behaviour (SPEC §2.3; google/youtube-8m's evaluator): the list being ranked is permuted so that
its item `random.Random(0).sample(range(n), n)[j]` comes j-th, then stably sorted by score,
descending. For GAP and per-class AP the list is the array of a binary min-heap (Python's heapq)
after the (score, actual) pairs were pushed in order: class by class, videos in order within a class
(with batches: batch, class, video). Each expected value below is a literal with its derivation; the
only facts taken from Python are the small sample permutations, quoted in the comments:

    random.Random(0).sample(range(3), 3) == [1, 2, 0]
    random.Random(0).sample(range(4), 4) == [3, 1, 0, 2]
    random.Random(0).sample(range(5), 5) == [3, 4, 0, 1, 2]
    random.Random(0).sample(range(20000), 20000): item 7 comes at index 468, item 0 at index 7875
"""

import random

import numpy as np
import pytest

from vmmlib.metrics import average_precision, class_average_precisions, gap, video_map


def test_the_quoted_sample_permutations_are_pythons():
    for n, drawn in [(3, [1, 2, 0]), (4, [3, 1, 0, 2]), (5, [3, 4, 0, 1, 2])]:
        assert random.Random(0).sample(range(n), n) == drawn
    drawn = random.Random(0).sample(range(20000), 20000)
    assert (drawn.index(7), drawn.index(0)) == (468, 7875)


def test_ties_within_two_score_groups_follow_the_sample_order():
    # items 0..4, scores [.5, .9, .5, .9, .5], positives 0, 3, 4 (3 in all).
    # Permuted by [3, 4, 0, 1, 2], then stably sorted: the .9 group keeps draw order 3 (+), 1 (-);
    # the .5 group 4 (+), 0 (+), 2 (-). Positives at ranks 1, 3, 4: (1/1 + 2/3 + 3/4) / 3 = 29/36.
    # (Input order among ties would rank them 2, 3, 5: 53/90.)
    scores, actuals = [0.5, 0.9, 0.5, 0.9, 0.5], [1, 0, 0, 1, 1]
    assert average_precision(scores, actuals) == pytest.approx(29 / 36, rel=1e-15)
    # n = 2: numpos = min(3, 2) = 2; only rank 1 (+) counts: (1/1) / 2
    assert average_precision(scores, actuals, n=2) == pytest.approx(0.5, rel=1e-15)


def test_ties_in_a_list_long_enough_for_the_vectorised_shuffle():
    # 20000 equal scores, positives at items 0 and 7: drawn at indices 7875 and 468, so ranked
    # 469th and 7876th: (1/469 + 2/7876) / 2.
    actuals = np.zeros(20000)
    actuals[[0, 7]] = 1
    assert average_precision(np.full(20000, 0.25), actuals) == pytest.approx(
        (1 / 469 + 2 / 7876) / 2, rel=1e-15
    )


def test_gap_ranks_ties_in_heap_order_and_batches_change_the_push_order():
    # Top-1 per video: v0 -> c0, v1 -> c1, v2 -> c0, v3 -> c1, all at 0.5; the only positive is (v2, c0).
    predictions = np.array([[0.5, 0.1], [0.1, 0.5], [0.5, 0.1], [0.1, 0.5]])
    labels = np.zeros((4, 2))
    labels[2, 0] = 1
    # One call: push order c0 (v0 -, v2 +), c1 (v1 -, v3 -): actuals 0, 1, 0, 0. heappush leaves
    # [0, 1, 0] after three pushes, then the fourth (0) swaps with its parent 1: heap [0, 0, 0, 1].
    # Permuted by [3, 1, 0, 2], heap item 3 (the positive) ranks first: GAP = 1/1 / 1 = 1.
    assert gap(predictions, labels, top_k=1) == pytest.approx(1.0, rel=1e-15)
    # Batches of 2 videos: push order v0 c0 (-), v1 c1 (-), v2 c0 (+), v3 c1 (-): actuals 0, 0, 1, 0;
    # no push moves anything: heap [0, 0, 1, 0]. Heap item 2 is drawn last: rank 4, GAP = 1/4.
    assert gap(predictions, labels, top_k=1, batch_size=2) == pytest.approx(0.25, rel=1e-15)


def test_class_average_precisions_rank_ties_in_heap_order():
    # k = 1 keeps class 0 of every video, all at 0.5; class 0's pushes: v0 (+), v1 (-), v2 (-).
    # heappush: [1]; [0, 1] (0 moves up); [0, 1, 0]. Permuted by [1, 2, 0]: heap item 1 (+) first: AP 1.
    # Class 1's one positive (v1) is never kept: AP 0. mAP = (1 + 0) / 2.
    predictions = np.array([[0.5, 0.1], [0.5, 0.1], [0.5, 0.1]])
    labels = np.array([[1, 0], [0, 1], [0, 0]])
    assert class_average_precisions(predictions, labels, top_k=1).tolist() == [1.0, 0.0]
    assert video_map(predictions, labels, top_k=1) == pytest.approx(0.5, rel=1e-15)
    # The same pushes ranked without the heap (ap_at_n on the list as given): [1, 2, 0] puts item 0
    # (+) third: AP 1/3.
    assert average_precision(predictions[:, 0], labels[:, 0]) == pytest.approx(1 / 3, rel=1e-15)
