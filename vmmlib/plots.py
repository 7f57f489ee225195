"""Plots the notebooks show (training curves, prediction scatter, score bars, search convergence)
and the run index's leaderboard chart."""

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


def _search_floor(scores: np.ndarray) -> float | None:
    """Lower y-limit that keeps the probes that matter: three times the spread of the better half
    of the probes below the median probe. None when every probe already fits (nothing to clip)."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return None
    best, median = float(finite.max()), float(np.median(finite))
    span = best - median or max(abs(best) * 0.01, 1e-3)
    floor = median - 3 * span
    return floor if finite.min() < floor else None


def plot_search(history: pd.DataFrame, *, metric: str = "score"):
    """Convergence of a weight search: every probe and the best so far.

    The y-axis keeps to the probes that matter: a failed probe (scored −1) or a far worse one
    would flatten the curve, so probes below a robust floor (the median probe minus three times the
    spread of the better half) are drawn on the floor as red triangles and counted in the legend.
    """
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    scores = history["score"].to_numpy(dtype=float)
    floor = _search_floor(scores)
    low = np.zeros(len(scores), dtype=bool) if floor is None else ~(scores >= floor)
    ax.plot(history["iteration"][~low], scores[~low], ".", label="probe")
    ax.plot(history["iteration"], history["best_so_far"], "-", label="best so far")
    if floor is not None:
        top = float(np.nanmax(scores))
        pad = 0.04 * (top - floor)
        worst = np.nanmin(scores) if np.isfinite(scores).any() else float("nan")
        ax.plot(history["iteration"][low], np.full(int(low.sum()), floor + pad), "v", color="tab:red",
                label=f"{int(low.sum())} probe(s) below {floor:.4g} (lowest {worst:.4g})")  # fmt: skip
        ax.set_ylim(floor, top + 3 * pad)
    ax.set(xlabel="iteration", ylabel=metric, title="weight search")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_leaderboard(rows: list[dict], *, metric: str, ax=None):
    """The index's leaderboard chart: per row its out-of-fold score (ensembles in orange) and,
    beside it, the fold mean ± sd with each fold as a dot.

    Args:
        rows: leaderboard rows as dicts (`vmmlib.leaderboard.Row`): name, kind, folds
            {fold: score}, fold_mean, fold_sd, oof; None or NaN for what is missing.
        ax: axes to draw on; default a new pyplot figure.

    The y-axis is zoomed onto the scores (it starts at 0 only when that is close), so that
    differences in the fourth decimal stay visible; the note in the corner says where it starts.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows) + 3.0), 3.8))

    def ok(v) -> bool:
        return v is not None and np.isfinite(v)

    shown, values, width = set(), [], 0.38

    def label(text: str) -> str:
        first = text not in shown
        shown.add(text)
        return text if first else "_"

    for i, r in enumerate(rows):
        folds = [v for v in (r.get("folds") or {}).values() if ok(v)]
        mean, sd, oof = r.get("fold_mean"), r.get("fold_sd"), r.get("oof")
        off = width / 2 if ok(mean) and ok(oof) else 0.0
        if ok(mean):
            ax.bar(i - off, mean, width, color="#9ecae1", label=label("fold mean ± sd"))
            if ok(sd):
                ax.errorbar(i - off, mean, yerr=sd, color="black", capsize=3, lw=1)
                values += [mean - sd, mean + sd]
            ax.plot([i - off] * len(folds), folds, "o", ms=3, color="#333", label=label("one fold"))
            values += [mean, *folds]
        if ok(oof):
            kind = "ensemble, out of fold" if r.get("kind") == "ensemble" else "out of fold"
            ax.bar(i + off, oof, width, color="tab:orange" if r.get("kind") == "ensemble" else "tab:blue",
                   label=label(kind))  # fmt: skip
            ax.annotate(f"{oof:.4f}", (i + off, oof), ha="center", va="bottom", fontsize=8)
            values.append(oof)
    if values:
        lo, hi = min(values), max(values)
        span = hi - lo or max(abs(hi) * 0.05, 1e-3)
        bottom = lo - 0.3 * span
        bottom = 0.0 if lo >= 0 and bottom < 0.5 * lo else bottom
        ax.set_ylim(bottom, hi + 0.25 * span)
        if bottom != 0:
            ax.set_xlabel(f"(y-axis starts at {bottom:.3f}, not 0)", fontsize=7, color="grey")
    names = [r["name"] + (f"\n{r['architecture']}" if r.get("architecture") else "") for r in rows]
    ax.set_xticks(range(len(rows)), names, fontsize=8)
    ax.set(ylabel=metric, title=f"{metric}: out of fold, and fold mean ± sd")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax.figure
