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


def _fake_task(written: list):
    """A task whose ensemble is the weighted sum of `x` (aligned by `ids`), written with a `suffix`."""
    import types

    from vmmlib.ensemble import weighted_arrays

    def combine(predictions, weights, *, scale: float = 1.0):
        out = weighted_arrays(predictions, weights, "ids", ("x",))
        return {**out, "x": out["x"] * scale}

    def score_oof(oof, data):
        return float(oof["x"].sum())

    def write_predictions(out_dir, prediction, *, suffix: str = "csv"):
        written.append((suffix, prediction["ids"].tolist(), prediction["x"].tolist()))
        return out_dir / f"sub.{suffix}"

    return types.SimpleNamespace(combine=combine, score_oof=score_oof, write_predictions=write_predictions)


def test_one_combine_is_scored_and_written_each_with_its_own_options(tmp_path):
    from vmmlib.ensemble import oof_scorer, write_submission

    written = []
    task = _fake_task(written)
    a = {"ids": np.array(["p", "q"]), "x": np.array([1.0, 2.0])}
    b = {"ids": np.array(["q", "p"]), "x": np.array([10.0, 20.0])}
    score = oof_scorer(task, [a, b], None, suffix="jsonl", scale=2.0)  # the writer's option is ignored
    assert score([1.0, 0.5]) == pytest.approx(2 * (3.0 + 15.0))
    with pytest.raises(ValueError, match="1 weights for 2 models"):
        score([1.0])
    with pytest.raises(ValueError, match="unknown ensemble option.*top_k; valid: scale, suffix"):
        oof_scorer(task, [a, b], None, top_k=3)
    with pytest.raises(ValueError, match="predictions differ: a model has no prediction for id q"):
        oof_scorer(task, [a, {"ids": np.array(["p"]), "x": np.array([1.0])}], None)
    path = write_submission(task, tmp_path, [a, b], [1.0, 0.5], suffix="jsonl")
    assert path.name == "sub.jsonl" and written == [("jsonl", ["p", "q"], [11.0, 7.0])]
    with pytest.raises(ValueError, match="3 weights for 2 models"):
        write_submission(task, tmp_path, [a, b], [1.0, 0.5, 0.2])
