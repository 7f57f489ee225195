"""What the explore notebook shows for any task: a dataset summary as tables, and its plots.

`explore(summarize, data_dir)` is the one skeleton every task's `explore` runs: it reads the splits
a task's `summarize(data_dir)` describes (`Summary`), at most `max_items_per_split` items each, with a
progress bar, and builds the `ExploreReport` — a row per item, the split table, example rows, and
the task's label, category and target summaries. The notebook renders it with the plot functions
here, so the notebook is the same for every task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

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


@dataclass
class Split:
    """One split of a data folder as the skeleton reads it."""

    name: str
    files: int  # files on disk behind the split
    items: Iterable = ()  # its items, read lazily (at most `max_items_per_split`)
    counts: dict | Callable[[list[dict]], dict] = field(default_factory=dict)
    """More columns of the split table, or a function of the split's rows giving them (called once
    they are read); they may override `files` and `items` (the rows read)."""
    examples: list[dict] | None = None  # example rows, instead of `Summary.read`'s


@dataclass
class Summary:
    """What a task's `summarize(data_dir)` gives the skeleton."""

    splits: Iterable[Split]  # may be a generator
    read: Callable[[str, Any], tuple[dict, dict | None]]  # (split, item) -> (row of `items`, example or None)
    finish: Callable[[pd.DataFrame, pd.DataFrame], dict]
    """(items, split table) -> the report's label_counts, category_counts, targets, target_name (and
    `splits`, to replace the table); called after every split is read."""
    distributions: list[str]  # numeric columns of `items` worth a histogram
    examples_per_split: int = 3


def explore(
    summarize: Callable[[Path], Summary], data_dir: str | Path, *, max_items_per_split: int = 0,
    progress: bool = True,
) -> ExploreReport:  # fmt: skip
    """The `ExploreReport` of a data folder described by a task's `summarize` (0 items: read all)."""
    from vmmlib.progress import progress as progress_bar

    summary = summarize(Path(data_dir))
    rows, examples, split_rows = [], [], []
    for split in summary.splits:
        read = []
        items = islice(split.items, max_items_per_split or None)
        for item in progress_bar(items, desc=f"reading {split.name}", disable=not progress, leave=False):
            row, example = summary.read(split.name, item)
            read.append({"split": split.name, **row})
            if example is not None and len(read) <= summary.examples_per_split:
                examples.append({"split": split.name, **example})
        if split.examples is not None:
            examples += [{"split": split.name, **e} for e in split.examples]
        counts = split.counts(read) if callable(split.counts) else split.counts
        split_rows.append({"split": split.name, "files": split.files, "items": len(read), **counts})
        rows += read
    items, splits = pd.DataFrame(rows), pd.DataFrame(split_rows).fillna(0)
    fields = {"splits": splits, **summary.finish(items, splits)}
    return ExploreReport(
        items=items, distributions=summary.distributions, examples=pd.DataFrame(examples), **fields
    )


def zeros(rows: list[dict], column: str) -> int:
    """How many of `rows` have 0 in `column` (videos without frames, empty titles, ...)."""
    return sum(r[column] == 0 for r in rows)


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
