"""Plots keep their axes on the values that matter."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vmmlib.plots import plot_history, plot_leaderboard, plot_search  # noqa: E402


def _search_history(scores) -> pd.DataFrame:
    history = pd.DataFrame({"iteration": range(len(scores)), "score": scores})
    history["best_so_far"] = history["score"].cummax()
    return history


def test_one_failed_probe_does_not_flatten_the_weight_search_plot():
    scores = 0.80 + 0.03 * np.random.default_rng(0).random(25)
    scores[7] = -1.0  # a probe whose weights summed to 0 (search_weights scores it −1)
    fig = plot_search(_search_history(scores), metric="spearman")
    ax = fig.axes[0]
    bottom, top = ax.get_ylim()
    assert 0.7 < bottom < scores[scores > 0].min() and top > scores.max()
    (clipped,) = [line for line in ax.get_lines() if "below" in line.get_label()]
    assert clipped.get_label().startswith("1 probe(s) below") and "lowest -1" in clipped.get_label()
    assert list(clipped.get_xdata()) == [7] and bottom <= clipped.get_ydata()[0] <= top  # marked, on the axis
    plt.close(fig)


def test_a_probe_with_all_weights_zero_is_marked_not_scored_instead_of_lowest_minus_one():
    scores = 0.80 + 0.03 * np.random.default_rng(0).random(12)
    scores[4] = -1.0  # search_weights' placeholder: no ensemble to score
    history = _search_history(scores).assign(weight_0=0.5, weight_1=0.5)
    history.loc[4, ["weight_0", "weight_1"]] = 0.0
    fig = plot_search(history, metric="spearman")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "1 probe(s) with all weights 0: not scored" in labels
    assert not any("lowest" in label or "below" in label for label in labels), labels
    assert 0.7 < fig.axes[0].get_ylim()[0] < scores[scores > 0].min()
    plt.close(fig)


def test_a_search_without_outliers_shows_every_probe():
    scores = np.array([0.64, 0.66, 0.7, 0.71, 0.69, 0.72])  # spread, but no outlier
    fig = plot_search(_search_history(scores))
    bottom, _ = fig.axes[0].get_ylim()
    assert bottom < 0.64 and not [line for line in fig.axes[0].get_lines() if "below" in line.get_label()]
    plt.close(fig)


def test_leaderboard_chart_zooms_onto_the_scores_and_skips_what_is_missing():
    rows = [
        {"name": "ensemble", "kind": "ensemble", "oof": 0.845, "folds": {}, "fold_mean": None, "fold_sd": None},
        {"name": "b", "kind": "model", "architecture": "net_b", "oof": 0.831,
         "folds": {0: 0.80, 1: 0.86, 2: 0.83}, "fold_mean": 0.83, "fold_sd": 0.03},
        {"name": "a", "kind": "model", "oof": float("nan"), "folds": {0: None}, "fold_mean": None, "fold_sd": None},
    ]  # fmt: skip
    fig = plot_leaderboard(rows, metric="spearman")
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.83, 0.831, 0.845]  # ensemble oof, b's fold mean and oof; nothing for a
    bottom, top = ax.get_ylim()
    assert 0.7 < bottom < 0.8 and top > 0.86  # the fold spread (0.80-0.86) fits, the axis is zoomed
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ensemble", "b\nnet_b", "a"]
    assert "not 0" in ax.get_xlabel()
    plt.close(fig)


def test_a_loss_term_below_zero_is_drawn_dashed_and_explained_under_the_plot():
    steps = np.arange(1, 11)
    history = pd.DataFrame({"step": steps, "train/loss": 2.0 / steps, "train/kl": 0.5 - 0.1 * steps})
    fig = plot_history(history, title="fold 0")
    kl = next(line for line in fig.axes[0].get_lines() if line.get_label().startswith("kl"))
    assert kl.get_linestyle() == "--" and "< 0" in kl.get_label()
    assert any("Keras KLDivergence on un-normalised" in t.get_text() for t in fig.texts)
    plt.close(fig)
