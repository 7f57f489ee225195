"""The explore notebook's plots draw (not only build) on data without labels, categories or targets, as
a test split or `vmm extract` output is: a log axis over nothing fails only when the figure is drawn."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vmmlib import explore as ex  # noqa: E402

PLOTS = [name for name in dir(ex) if name.startswith("plot_")]


def _report(labels: dict, targets: list) -> ex.ExploreReport:
    items = pd.DataFrame({"split": ["test_a"] * 3, "id": ["a", "b", "c"], "num_frames": [6, 10, 5]})
    return ex.ExploreReport(
        splits=pd.DataFrame({"split": ["test_a"], "files": [1], "items": [3]}),
        items=items,
        distributions=["num_frames"],
        label_counts=pd.Series(labels, dtype=object, name="videos"),
        category_counts=pd.Series({}, dtype=object, name="videos"),
        targets=pd.Series(targets, dtype=object, name="relevance"),
    )


@pytest.mark.parametrize("plot", PLOTS)
@pytest.mark.parametrize("labels", [{}, {7: 0, 11: 0}, {7: 3, 11: 1, 12: 0}], ids=["none", "zeros", "some"])
def test_every_plot_draws_on_unlabelled_and_labelled_data(plot, labels):
    fig = getattr(ex, plot)(_report(labels, [] if not labels else [0.5, 1.0]))
    fig.canvas.draw()  # where matplotlib refuses a log axis without positive data
    plt.close(fig)


def test_the_long_tail_says_when_there_are_no_labels():
    fig = ex.plot_label_long_tail(_report({}, []))
    assert [t.get_text() for t in fig.axes[0].texts] == ["no labels in this data"]
    plt.close(fig)
