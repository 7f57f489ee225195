"""What the explore notebook shows for any task: a dataset summary as tables, and its plots.

A task's `explore(data_dir)` returns an `ExploreReport`; the notebook renders it with the plot
functions here, so the notebook is the same for every task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


@dataclass
class ExploreReport:
    splits: pd.DataFrame  # one row per split: split, files, items (+ task-specific counts)
    items: pd.DataFrame  # one row per video: split, id and numeric columns (num_frames, title_len, ...)
    distributions: list[str]  # numeric columns of `items` worth a histogram
    label_counts: pd.Series  # label (tag / class) → number of videos carrying it
    category_counts: pd.Series  # category → number of videos
    targets: pd.Series  # the supervised target values (pair relevance, ...)
    target_name: str = "target"
    examples: pd.DataFrame = field(default_factory=pd.DataFrame)


def plot_split_counts(report: ExploreReport):
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(report.splits["split"], report.splits["items"], color="tab:blue")
    for x, y in zip(report.splits["split"], report.splits["items"]):
        ax.annotate(str(y), (x, y), ha="center", va="bottom")
    ax.set(title="Items per split", ylabel="items")
    return fig


def plot_distributions(report: ExploreReport):
    import seaborn as sns

    cols = report.distributions
    fig, axes = plt.subplots(1, len(cols), figsize=(4.5 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        sns.histplot(
            data=report.items, x=col, hue="split", element="step", stat="density", common_norm=False, ax=ax
        )
        ax.set(title=col.replace("_", " "))
    fig.tight_layout()
    return fig


def plot_label_long_tail(report: ExploreReport):
    counts = np.sort(report.label_counts.to_numpy(dtype=float))[::-1]
    counts = counts[counts > 0]  # a log axis shows labels that occur
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.set(xlabel="label rank", ylabel="videos", title="Label frequency (long tail)")
    if not len(counts):  # unlabelled data (a test split, `vmm extract` output): say so, no empty log axes
        ax.text(0.5, 0.5, "no labels in this data", ha="center", va="center", transform=ax.transAxes)
        return fig
    ax.plot(np.arange(1, len(counts) + 1), counts, marker=".", linestyle="none")
    ax.set(xscale="log", yscale="log")
    return fig


def plot_categories(report: ExploreReport, top: int = 30):
    counts = report.category_counts.sort_values(ascending=False).head(top)
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(counts)), 3.2))
    ax.bar([str(c) for c in counts.index], counts.to_numpy(), color="tab:orange")
    ax.tick_params(axis="x", rotation=90)
    ax.set(title=f"Categories (top {len(counts)})", ylabel="videos")
    return fig


def plot_targets(report: ExploreReport):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(report.targets.to_numpy(), bins=20, color="tab:green")
    ax.set(title=f"{report.target_name} distribution", xlabel=report.target_name, ylabel="count")
    return fig
