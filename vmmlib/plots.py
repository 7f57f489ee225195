"""Plots the notebooks show: training curves, prediction scatter, score bars, search convergence."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def plot_history(history: pd.DataFrame, *, title: str = ""):
    """Loss terms (left) and evaluation metrics (right) against the training step."""
    terms = [
        c for c in history.columns if c.startswith("train/") and c not in ("train/skipped", "train/grad_norm")
    ]
    metrics = [c for c in history.columns if c.startswith("eval/")]
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(11 if metrics else 6, 3.4), squeeze=False)
    for col in terms:
        rows = history[["step", col]].dropna()
        axes[0, 0].plot(
            rows["step"], rows[col], label=col.removeprefix("train/"), lw=2 if col == "train/loss" else 1
        )
    axes[0, 0].set(xlabel="step", ylabel="loss", title=f"{title} training loss".strip())
    axes[0, 0].legend(fontsize=8)
    for col in metrics:
        rows = history[["step", col]].dropna()
        axes[0, 1].plot(rows["step"], rows[col], marker="o", label=col.removeprefix("eval/"))
    if metrics:
        axes[0, 1].set(xlabel="step", title=f"{title} validation".strip())
        axes[0, 1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_scatter(
    predicted: np.ndarray,
    target: np.ndarray,
    *,
    xlabel: str = "predicted",
    ylabel: str = "label",
    title: str = "",
):
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(predicted, target, s=8, alpha=0.5)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return fig


def plot_scores(
    scores: dict[str, float],
    *,
    metric: str = "score",
    highlight: str | None = None,
    baseline: float | None = None,
):
    """Bar chart of per-model scores (the `highlight` bar, e.g. the ensemble, in another colour)."""
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(scores)), 3.4))
    names = list(scores)
    colours = ["tab:orange" if n == highlight else "tab:blue" for n in names]
    ax.bar(names, [scores[n] for n in names], color=colours)
    for i, n in enumerate(names):
        ax.annotate(f"{scores[n]:.4f}", (i, scores[n]), ha="center", va="bottom", fontsize=8)
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", lw=1, label="untrained")
        ax.legend(fontsize=8)
    ax.set(ylabel=metric, title=f"{metric} per model")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return fig


def plot_search(history: pd.DataFrame, *, metric: str = "score"):
    """Convergence of a weight search: every probe and the best so far."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(history["iteration"], history["score"], ".", label="probe")
    ax.plot(history["iteration"], history["best_so_far"], "-", label="best so far")
    ax.set(xlabel="iteration", ylabel=metric, title="weight search")
    ax.legend(fontsize=8)
    return fig
