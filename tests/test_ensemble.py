import numpy as np
import pytest

from vmmlib.ensemble import align_by_id, search_weights, weighted_sum


def test_search_finds_the_better_mixture_and_keeps_its_history():
    target = np.array([0.7, 0.3])

    def objective(w):
        w = np.asarray(w) / np.sum(w)
        return -float(np.sum((w - target) ** 2))

    result = search_weights(objective, 2, init_points=4, n_iter=15, seed=7)
    assert np.allclose(result.weights, target, atol=0.1) and sum(result.weights) == pytest.approx(1)
    assert len(result.history) == 1 + 4 + 15 and result.history["best_so_far"].is_monotonic_increasing
    assert result.score >= objective([0.5, 0.5])  # never below the equal-weight probe


def test_extra_parameters_are_searched_jointly():
    result = search_weights(
        lambda w, decay: -abs(decay - 3.0), 2, extra_bounds={"decay": (0, 10)}, init_points=3, n_iter=12
    )
    assert abs(result.extra["decay"] - 3.0) < 1.0


def test_weighted_sum_and_alignment():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[3.0, 3.0], [1.0, 1.0]])
    ids, (x, y) = align_by_id([["p", "q"], ["q", "p"]], [a, b])
    assert ids == ["p", "q"] and y.tolist() == [[1.0, 1.0], [3.0, 3.0]]
    assert weighted_sum([x, y], [0.5, 0.5]).tolist() == [[1.0, 0.5], [1.5, 2.0]]
    with pytest.raises(KeyError, match="no prediction for id q"):
        align_by_id([["p", "q"], ["p"]], [a, b[:1]])
    with pytest.raises(ValueError, match="2 arrays but 1 weights"):
        weighted_sum([a, b], [1.0])
