"""YouTube-8M metrics against hand-computed cases and against a slow reference written from the metric
definitions (`reference_yt8m`); the official tie order is pinned by hand-derived cases in test_yt8m_ties.py."""

import heapq
import random

import numpy as np
import pytest

from vmmlib.metrics import _official_ties as ties
from vmmlib.metrics import (
    average_precision,
    class_average_precisions,
    gap,
    hit_at_one,
    perr,
    read_kaggle_csv,
    read_segment_truth,
    segment_map,
    top_k_indices,
    video_map,
    write_kaggle_csv,
)

from . import reference_yt8m as reference


def _tied_inputs(seed, videos, classes, decimals=1, labels_per_video=3):
    """Scores rounded to `decimals` (many ties, also at the top-k cut); bool labels, some videos and classes empty."""
    rng = np.random.default_rng(seed)
    predictions = rng.random((videos, classes)).round(decimals).astype(np.float32)
    labels = np.zeros((videos, classes), bool)
    for v in range(videos):
        labels[v, rng.choice(classes, rng.integers(0, labels_per_video + 1), replace=False)] = True
    predictions[labels] = np.minimum(predictions[labels] + 0.3, 1.0).round(decimals)  # some signal
    labels[:, -1] = False  # a class without positives
    return predictions, labels


# ------------------------------------------------------------------ official tie order


@pytest.mark.parametrize("n", [0, 1, 2, 3, 100, 16383, 16384, 16385, 65537, 131075, 300_001])
def test_sample_permutation_is_random_sample_of_range_n_after_seed_0(n):
    assert ties.sample_permutation(n).tolist() == random.Random(0).sample(range(n), n)


def test_sample_positions_of_a_few_items_match_the_whole_permutation():
    n = 200_003
    items = np.random.default_rng(0).choice(n, 500, replace=False)
    position = np.empty(n, np.int64)
    position[random.Random(0).sample(range(n), n)] = np.arange(n)
    assert ties.sample_positions(n, items).tolist() == position[items].tolist()


def test_vectorised_shuffle_matches_python_at_every_bit_length(monkeypatch):
    monkeypatch.setattr(ties, "_DIRECT_BELOW", 0)  # force the numpy replay even for tiny n
    monkeypatch.setattr(ties, "_TAIL", 4)
    ties._draw_index.cache_clear()
    for n in [1, 2, 5, 6, 17, 64, 65, 1000, 4099, 20000]:
        assert ties.sample_permutation(n).tolist() == random.Random(0).sample(range(n), n), n
    ties._draw_index.cache_clear()


def test_draws_are_cached_read_only():
    assert ties._draw_index(20000) is ties._draw_index(20000)
    with pytest.raises(ValueError, match="read-only"):
        ties._draw_index(20000)[0][0] = 1


def test_shuffle_replay_leaves_the_global_rng_alone():
    random.seed(123)
    state = random.getstate()
    ties.sample_permutation(20000)
    average_precision([0.5] * 30, [1, 0] * 15)
    assert random.getstate() == state


def test_heap_order_is_the_list_heappush_builds():
    keys = np.random.default_rng(0).integers(0, 50, 5000)  # many duplicates
    heap = []
    for key in keys.tolist():
        heapq.heappush(heap, key)
    assert ties.heap_order(keys).tolist() == heap


# ------------------------------------------------------------------ average precision


def test_average_precision_counts_positives_never_ranked_in_the_recall():
    # positives at ranks 1 and 3, two more positives exist elsewhere: (1/1 + 2/3) / 4
    assert average_precision([0.9, 0.8, 0.7], [1, 0, 1], total_num_positives=4) == pytest.approx(5 / 12)


def test_average_precision_at_n_cuts_the_ranking_and_caps_numpos():
    # n=2: only ranks 1-2 count, numpos = min(2, 2): (1/2) / 2
    assert average_precision([0.9, 0.8, 0.7, 0.6], [0, 1, 0, 1], n=2) == pytest.approx(0.25)
    # numpos = min(5, 2) = 2: a perfect top-2 scores 1 even though 5 positives exist
    assert average_precision([0.9, 0.8, 0.7], [1, 1, 0], n=2, total_num_positives=5) == pytest.approx(1.0)


def test_average_precision_is_zero_without_positives():
    assert average_precision([0.9, 0.1], [0, 0]) == 0.0
    assert average_precision([], []) == 0.0


def test_average_precision_breaks_ties_by_the_seed_0_sample_then_stable_sort():
    # random.seed(0); random.sample(range(4), 4) == [3, 1, 0, 2]: the positive (item 0) ranks 3rd,
    # not 1st (input order) nor 4th (positives last): AP = 1/3.
    assert average_precision([0.5, 0.5, 0.5, 0.5], [1, 0, 0, 0]) == pytest.approx(1 / 3)


def test_average_precision_rejects_a_bad_n():
    with pytest.raises(ValueError, match="positive integer"):
        average_precision([0.1], [1], n=0)


@pytest.mark.parametrize("size", [7, 300, 20000])  # 20000 > the python/numpy shuffle switch
@pytest.mark.parametrize("n", [None, 20])
def test_average_precision_equals_the_reference_ap_at_n_on_tied_scores(size, n):
    rng = np.random.default_rng(size)
    predictions = rng.random(size).round(1)
    actuals = (rng.random(size) < 0.3).astype(np.float64)
    for total in [None, int(actuals.sum()) + 5]:
        expected = reference.ap_at_n(predictions, actuals, n=n, total_num_positives=total)
        got = average_precision(predictions, actuals, n=n, total_num_positives=total)
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


# ------------------------------------------------------------------ video level


def test_top_k_indices_keep_what_argpartition_keeps_even_with_ties_at_the_cut():
    for decimals, classes, k in [(1, 500, 20), (3, 3862, 20), (6, 200, 5), (1, 30, 20), (2, 8, 20)]:
        predictions, _ = _tied_inputs(decimals, 64, classes, decimals)
        rows, cols = top_k_indices(predictions, k)
        kk = min(k, classes)
        expected = [(r, c) for r in range(64) for c in sorted(np.argpartition(predictions[r], -kk)[-kk:])]
        assert list(zip(rows.tolist(), cols.tolist())) == expected


def test_top_k_indices_follow_argpartition_for_nan_rows():
    predictions = np.random.default_rng(0).random((3, 400)).astype(np.float32)
    predictions[1, [5, 77]] = np.nan
    rows, cols = top_k_indices(predictions, 20)
    assert sorted(cols[rows == 1].tolist()) == sorted(np.argpartition(predictions[1], -20)[-20:].tolist())


def test_gap_counts_positives_outside_the_top_k():
    predictions = np.array([[0.9, 0.8, 0.1, 0.1], [0.2, 0.7, 0.6, 0.1]])
    labels = np.array([[1, 1, 0, 0], [0, 0, 1, 0]])
    # kept (k=1): (0.9, pos), (0.7, neg); 3 positives in all -> (1/1) / 3
    assert gap(predictions, labels, top_k=1) == pytest.approx(1 / 3)


def test_gap_ranks_tied_scores_in_the_official_heap_then_shuffle_order():
    # pushes (0.5,1),(0.5,0),(0.5,0) leave the heap [(0.5,0),(0.5,1),(0.5,0)]; sample(range(3)) = [1,2,0]
    # puts the positive first: GAP 1. The same list fed to ap_at_n directly ranks it 3rd.
    predictions, labels = np.full((3, 1), 0.5), np.array([[1], [0], [0]])
    assert gap(predictions, labels, top_k=1) == pytest.approx(1.0)
    assert average_precision(predictions[:, 0], labels[:, 0]) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("seed", "videos", "classes", "k", "decimals"), [(0, 200, 40, 5, 1), (1, 300, 150, 20, 1)]
)
@pytest.mark.parametrize("label_dtype", [bool, np.int64, np.float64])
def test_gap_map_hit_perr_equal_the_reference_on_tied_scores(seed, videos, classes, k, decimals, label_dtype):
    predictions, labels = _tied_inputs(seed, videos, classes, decimals)
    labels = labels.astype(label_dtype)  # float64, not float32: see the NEP 50 note in yt8m.py
    close = {"rel": 1e-12, "abs": 1e-15}
    assert gap(predictions, labels, top_k=k) == pytest.approx(reference.gap(predictions, labels, k), **close)
    aps = class_average_precisions(predictions, labels, top_k=k)
    expected = reference.class_aps(predictions, labels, k)
    assert np.flatnonzero(~np.isnan(aps)).tolist() == sorted(expected)
    assert aps[sorted(expected)] == pytest.approx([expected[c] for c in sorted(expected)], **close)
    assert np.isnan(aps[-1])  # no positives: dropped, as filter_empty_classes does
    assert video_map(predictions, labels, top_k=k) == pytest.approx(np.mean(list(expected.values())), **close)
    assert hit_at_one(predictions, labels) == pytest.approx(
        reference.hit_at_one(predictions, labels), **close
    )
    assert perr(predictions, labels) == pytest.approx(reference.perr(predictions, labels), **close)


def test_gap_equals_the_reference_on_a_list_long_enough_for_the_numpy_shuffle():
    predictions, labels = _tied_inputs(7, 1200, 300, decimals=2)  # 24000 kept pairs, mixed ties
    assert gap(predictions, labels) == pytest.approx(reference.gap(predictions, labels), rel=1e-12)


def test_gap_with_batch_size_follows_the_batch_class_video_push_order():
    predictions, labels = _tied_inputs(3, 250, 60, decimals=1)
    expected = reference.gap(predictions, labels, batch_size=64)
    assert gap(predictions, labels, batch_size=64) == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(reference.gap(predictions, labels), rel=1e-9)  # the order matters here


def test_video_map_drops_classes_without_positives_and_scores_unreached_ones_zero():
    predictions = np.array([[0.9, 0.1, 0.8], [0.7, 0.2, 0.95]])
    labels = np.array([[1, 1, 0], [1, 0, 0]])
    # k=1 keeps (v0, c0) and (v1, c2). Class 0: AP 1/2 (1 of its 2 positives, at rank 1);
    # class 1: positive never kept -> 0; class 2: no positive -> dropped although predicted.
    assert class_average_precisions(predictions, labels, top_k=1)[:2].tolist() == [0.5, 0.0]
    assert video_map(predictions, labels, top_k=1) == pytest.approx(0.25)


def test_hit_at_one_takes_the_first_of_tied_top_scores():
    predictions = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9]])
    labels = np.array([[0, 1, 0], [0, 1, 0]])
    assert hit_at_one(predictions, labels) == pytest.approx(0.5)  # argmax: class 0, then class 1


def test_perr_scores_videos_without_labels_zero_and_ignores_non_positive_scores():
    predictions = np.array([[0.9, 0.2, 0.1], [0.5, 0.0, -1.0], [0.3, 0.2, 0.1]])
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    # video 0: 1/1; video 1: top-2 = classes 0, 1 but class 1 scores 0 -> 1/2; video 2: no labels -> 0
    assert perr(predictions, labels) == pytest.approx((1 + 0.5 + 0) / 3)


# ------------------------------------------------------------------ segment level


def _truth():
    return {
        ("a:0", 1): 1.0,
        ("a:5", 1): 0.0,
        ("b:0", 1): 1.0,
        ("c:0", 2): 1.0,
        ("d:0", 3): 0.0,  # class 3: rated, never positive
        ("e:0", 4): 1.0,  # class 4: not submitted
    }


def test_segment_map_drops_unrated_segments_and_counts_only_submitted_classes():
    submission = {1: ["x:0", "a:5", "a:0", "zz:1"], 2: ["c:0"], 3: ["d:0"]}
    # class 1 keeps [a:5 (0), a:0 (1)]: (1/2) / 2 positives; class 2: 1; class 3 (no positive) and
    # class 4 (not submitted) are not counted.
    assert segment_map(submission, _truth()) == pytest.approx((0.25 + 1.0) / 2)


def test_segment_map_cuts_rows_at_top_n_before_dropping_unrated_segments():
    submission = {1: ["x:0", "a:0", "b:0"], 2: ["c:0"]}
    assert segment_map(submission, _truth(), top_n=2) == pytest.approx((0.5 + 1.0) / 2)
    assert segment_map(submission, _truth(), top_n=None) == pytest.approx(1.0)


def test_read_segment_truth_builds_official_keys():
    truth = read_segment_truth([b"Ab12", "Cd34"], [[0, 5], [10]], [[7, 7], [3]], [[1.0, 0.0], [1.0]])
    assert truth == {("Ab12:0", 7): 1.0, ("Ab12:5", 7): 0.0, ("Cd34:10", 3): 1.0}


def test_kaggle_csv_round_trip_and_official_line_split(tmp_path):
    path = tmp_path / "sub.csv"
    write_kaggle_csv(path, {2: ["c:0"], 1: ["a:0", "b:0"]})
    assert path.read_text().splitlines() == ["Class,Segments", "1,a:0 b:0", "2,c:0"]
    assert read_kaggle_csv(path) == {1: ["a:0", "b:0"], 2: ["c:0"]}
    # the official reader keeps the newline on each row's last id, which then never matches
    assert read_kaggle_csv(path, official_line_split=True) == {1: ["a:0", "b:0\n"], 2: ["c:0\n"]}


def test_write_kaggle_csv_rejects_long_rows_and_bad_ids(tmp_path):
    with pytest.raises(ValueError, match="more than 2"):
        write_kaggle_csv(tmp_path / "a.csv", {1: ["a:0", "b:0", "c:0"]}, max_per_class=2)
    with pytest.raises(ValueError, match="whitespace"):
        write_kaggle_csv(tmp_path / "b.csv", {1: ["a:0 b:0"]})


def test_segment_map_equals_the_reference_on_random_submissions(tmp_path):
    rng = np.random.default_rng(5)
    segments = [f"v{v}:{5 * s}" for v in range(60) for s in range(8)]
    truth = {}
    for segment in segments:
        for label in rng.choice(12, 2, replace=False):
            truth[(segment, int(label))] = float(rng.random() < 0.4)
    submission = {int(c): list(rng.choice(segments, 150, replace=False)) for c in range(10)}
    path = tmp_path / "sub.csv"
    write_kaggle_csv(path, submission)
    submission[10] = submission[0][:5] * 2  # duplicate ids are kept; class 10 is never rated
    submission[11] = ["zz:0", *submission[1][:20]]  # an unrated id first
    write_kaggle_csv(path, submission)
    for top_n in [0, 40]:
        as_read = read_kaggle_csv(path, official_line_split=True)
        expected = reference.segment_map(as_read, truth, top_n=top_n)
        assert segment_map(as_read, truth, top_n) == pytest.approx(expected, rel=1e-12)
    assert segment_map(read_kaggle_csv(path), truth, 0) == pytest.approx(segment_map(submission, truth, None))
