"""WBDC F1-mean: the official `util.evaluate` semantics, checked against sklearn's f1_score."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score

from vmmlib.io.wbdc_categories import LV2_TO_LV1, NUM_LV2
from vmmlib.metrics import wbdc as M


def _official(y_true, y_pred):
    """The organisers' evaluate(predictions, labels), written out with sklearn."""
    lv1_true, lv1_pred = LV2_TO_LV1[y_true], LV2_TO_LV1[y_pred]
    scores = {
        "lv2_f1_micro": f1_score(y_true, y_pred, average="micro"),
        "lv2_f1_macro": f1_score(y_true, y_pred, average="macro"),
        "lv1_f1_micro": f1_score(lv1_true, lv1_pred, average="micro"),
        "lv1_f1_macro": f1_score(lv1_true, lv1_pred, average="macro"),
    }
    scores["mean_f1"] = sum(scores.values()) / 4
    return scores


@pytest.mark.parametrize("seed", range(5))
def test_f1_mean_matches_sklearn_on_random_skewed_predictions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 2000))
    p = rng.dirichlet(np.full(NUM_LV2, 0.3))
    y_true = rng.choice(NUM_LV2, n, p=p)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.choice(NUM_LV2, n, p=p))
    ours, ref = M.f1_mean(y_true, y_pred), _official(y_true, y_pred)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    assert ours["lv2_acc"] == pytest.approx(np.mean(y_true == y_pred))


def test_a_class_never_predicted_counts_zero_in_macro_and_lowers_micro():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0])  # class 2 is never predicted
    # per class F1: 0 → 2·2/(3+2) = 0.8, 1 → 1, 2 → 0; macro = 0.6; micro = accuracy = 0.8
    assert M.macro_f1(y_true, y_pred) == pytest.approx(0.6)
    assert M.micro_f1(y_true, y_pred) == pytest.approx(0.8)
    assert M.macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0)
    )


def test_a_class_predicted_but_absent_from_the_truth_joins_the_macro_average_with_zero():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 5])  # class 5 is not in the truth: labels = union {0, 1, 5}
    # F1: class 0 → 1, class 1 → 2/3, class 5 → 0; macro over 3 classes = (1 + 2/3) / 3
    assert M.macro_f1(y_true, y_pred) == pytest.approx((1 + 2 / 3) / 3)
    assert M.macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    # classes in neither the truth nor the predictions are ignored (not averaged in as 0)
    assert M.macro_f1([3, 3], [3, 3]) == 1.0


def test_lv1_scores_use_the_parent_class_so_a_sibling_error_is_right_at_lv1():
    y_true = np.array([0, 9, 14])  # categories 0000, 0100, 0200
    y_pred = np.array([1, 9, 14])  # 0001: the wrong sub-class of the right lv1 class
    scores = M.f1_mean(y_true, y_pred)
    assert scores["lv1_f1_micro"] == scores["lv1_f1_macro"] == scores["lv1_acc"] == 1.0
    assert scores["lv2_f1_micro"] == pytest.approx(2 / 3)
    assert scores["lv2_f1_macro"] == pytest.approx(0.5)  # classes {0, 1, 9, 14}: F1 0, 0, 1, 1
    assert scores["mean_f1"] == pytest.approx((1 + 1 + 2 / 3 + 0.5) / 4)


def test_perfect_and_from_probabilities():
    y = np.array([5, 199, 0, 5])
    assert M.f1_mean(y, y)["mean_f1"] == 1.0
    probs = np.full((4, NUM_LV2), 0.001)
    probs[np.arange(4), y] = 0.9
    assert M.f1_mean_from_probs(y, probs)["mean_f1"] == 1.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="undefined"):
        M.f1_mean([], [])
    with pytest.raises(ValueError, match="3 ids but y_pred has 2"):
        M.f1_mean([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="0..199"):
        M.f1_mean([1, 200], [1, 2])
    with pytest.raises(ValueError, match="integer"):
        M.micro_f1([0.5], [1.0])


def test_per_class_table_and_confusion_match_sklearn():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 30, 400)
    y_pred = np.where(rng.random(400) < 0.5, y_true, rng.integers(0, 35, 400))
    table = M.per_class_f1(y_true, y_pred)
    labels = np.union1d(y_true, y_pred)
    ref = dict(zip(labels, f1_score(y_true, y_pred, labels=labels, average=None)))
    assert set(table["lv2"]) == set(labels)
    for row in table.itertuples():
        assert row.f1 == pytest.approx(ref[row.lv2])
        assert row.lv1 == LV2_TO_LV1[row.lv2]
    assert table["support"].is_monotonic_decreasing
    np.testing.assert_array_equal(
        M.confusion_matrix(y_true, y_pred), sk_confusion(y_true, y_pred, labels=range(NUM_LV2))
    )
