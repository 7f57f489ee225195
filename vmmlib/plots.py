"""Plots the notebooks show (training curves, prediction scatter, score bars, search convergence)
and the run index's leaderboard chart."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

# Why a loss term can go below 0, for the note under the loss plot (a term not listed gets a generic one).
TERM_NOTES = {
    "kl": "kl is seed 000's Keras KLDivergence on un-normalised batch similarities (vmmlib.objectives.losses.keras_kl), "
    "not a divergence of distributions: it drops below 0 once predicted cosines exceed the label similarities",
}


def plot_history(history: pd.DataFrame, *, title: str = ""):
    """Loss terms (left) and evaluation metrics (right) against the training step.

    A term that goes below 0 is drawn dashed, with a zero line and a note under the plot saying why
    (`TERM_NOTES`), so a negative curve does not read as a bug or as a better-than-perfect loss.
    """
    terms = [
        c for c in history.columns if c.startswith("train/") and c not in ("train/skipped", "train/grad_norm")
    ]
    metrics = [c for c in history.columns if c.startswith("eval/")]
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(11 if metrics else 6, 3.4), squeeze=False)
    negative = []
    for col in terms:
        rows = history[["step", col]].dropna()
        name = col.removeprefix("train/")
        below = bool((rows[col] < 0).any())
        negative += [name] * below
        axes[0, 0].plot(
            rows["step"], rows[col], label=name + " (< 0: see note)" * below,
            lw=2 if col == "train/loss" else 1, ls="--" if below else "-",
        )  # fmt: skip
    axes[0, 0].set(xlabel="step", ylabel="loss", title=f"{title} training loss".strip())
    if negative:
        axes[0, 0].axhline(0, color="grey", lw=0.8)
        notes = [TERM_NOTES.get(n, f"{n} is a loss term not bounded below by 0") for n in negative]
        fig.text(0.01, 0.01, "Below 0: " + "; ".join(notes) + ".", fontsize=7, color="#555", wrap=True)
    axes[0, 0].legend(fontsize=8)
    for col in metrics:
        rows = history[["step", col]].dropna()
        axes[0, 1].plot(rows["step"], rows[col], marker="o", label=col.removeprefix("eval/"))
    if metrics:
        axes[0, 1].set(xlabel="step", title=f"{title} validation".strip())
        axes[0, 1].legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.1 if negative else 0, 1, 1))
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

    A probe whose weights are all zero has no ensemble to score (`search_weights` gives it −1, a
    placeholder, not a score): it is drawn at the bottom as a grey cross and counted as "not scored".
    The y-axis keeps to the probes that matter: probes far below the rest (under the median probe
    minus three times the spread of the better half) would flatten the curve, so they are drawn on
    that floor as red triangles, counted in the legend with the lowest real score among them.
    """
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    scores = history["score"].to_numpy(dtype=float)
    weight_cols = [c for c in history.columns if c.startswith("weight_")]
    unscored = (
        (history[weight_cols].sum(axis=1) <= 0).to_numpy() if weight_cols else np.zeros(len(scores), bool)
    )
    real = np.where(unscored, np.nan, scores)
    floor = _search_floor(real)
    low = np.zeros(len(scores), dtype=bool) if floor is None else ~(real >= floor) & ~unscored
    keep = ~low & ~unscored
    ax.plot(history["iteration"][keep], scores[keep], ".", label="probe")
    ax.plot(history["iteration"], history["best_so_far"], "-", label="best so far")
    top = float(np.nanmax(real)) if np.isfinite(real).any() else 0.0
    if floor is not None:
        bottom = floor
    else:
        lowest = float(np.nanmin(real)) if np.isfinite(real).any() else 0.0
        bottom = lowest - 0.1 * (top - lowest or 1.0)
    pad = 0.04 * (top - bottom or 1.0)
    if low.any():
        ax.plot(history["iteration"][low], np.full(int(low.sum()), bottom + pad), "v", color="tab:red",
                label=f"{int(low.sum())} probe(s) below {floor:.4g} (lowest {np.nanmin(real[low]):.4g})")  # fmt: skip
    if unscored.any():
        ax.plot(history["iteration"][unscored], np.full(int(unscored.sum()), bottom + pad), "x", color="grey",
                label=f"{int(unscored.sum())} probe(s) with all weights 0: not scored")  # fmt: skip
    if low.any() or unscored.any():
        ax.set_ylim(bottom, top + 3 * pad)
    ax.set(xlabel="iteration", ylabel=metric, title="weight search")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_leaderboard(rows: list[dict], *, metric: str, ax=None):
    """The index's leaderboard chart: per row its out-of-fold score (ensembles in orange) and,
    beside it, the fold mean ± sd with each fold as a dot.

    Args:
        rows: leaderboard rows as dicts (`vmmlib.app.leaderboard.Row`): name, kind, folds
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


# --- the tasks' fold tables (`Task.plot_fold`) ---------------------------------------------------------


def plot_table_bars(table: pd.DataFrame, columns: list[str] | None = None, *, title: str = ""):
    """Grouped bars of a fold table's `columns` (default: every numeric one but `fold`), one bar per row."""
    cols = columns or [c for c in table.select_dtypes("number").columns if c != "fold"]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(cols) * len(table)), 3.2))
    width = 0.8 / len(table)
    for j, (_, row) in enumerate(table.iterrows()):
        label = f"fold {row['fold']}" if "fold" in table else None
        ax.bar(np.arange(len(cols)) + j * width, row[cols].to_numpy(float), width, label=label)
    ax.set_xticks(np.arange(len(cols)) + 0.4 - width / 2, cols, rotation=30)
    ax.set(title=title)
    if "fold" in table:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pair_cosines(table: pd.DataFrame, title: str = ""):
    """Predicted cosine vs labelled relevance of out-of-fold pairs (qqbrowser)."""
    return plot_scatter(
        table["cosine"], table["relevance"], xlabel="predicted cosine", ylabel="relevance", title=title
    )


def plot_shift_aps(table: pd.DataFrame, title: str = ""):
    """Segment mAP per TTA shift and after the rank vote (`ap_*` columns, `ap_tta` last), and the
    per-class AP histogram after the vote (yt8m)."""
    cols = [c for c in table.columns if c.startswith("ap_")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    means = table[cols].mean()
    left.bar([c[3:] for c in cols], means.to_numpy(), color=["tab:blue"] * (len(cols) - 1) + ["tab:orange"])
    for x, y in enumerate(means):
        left.annotate(f"{y:.3f}", (x, y), ha="center", va="bottom")
    left.set(title="segment mAP", ylim=(0, 1.05))
    right.hist(table["ap_tta"], bins=20, range=(0, 1), color="tab:orange")
    right.set(title="per-class AP (TTA)", xlabel="AP", ylabel="classes")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_rank_recalls(table: pd.DataFrame, title: str = "", *, ks: tuple[int, ...] = (1, 5, 10)):
    """R@K from each query's best-positive rank (`rank`, and `offline_rank` when online learning ran),
    and the histogram of those ranks (muge)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    columns = [c for c in ("offline_rank", "rank") if c in table]
    width = 0.8 / len(columns)
    for j, col in enumerate(columns):
        recalls = [(table[col] <= k).mean() for k in ks]
        x = np.arange(len(ks)) + j * width
        left.bar(
            x, recalls, width, label="online" if col == "rank" and len(columns) > 1 else col.replace("_", " ")
        )
        for xi, y in zip(x, recalls):
            left.annotate(f"{y:.2f}", (xi, y), ha="center", va="bottom", fontsize=8)
    left.set(title="text → image recall", xticks=np.arange(len(ks)) + 0.4 - width / 2,
             xticklabels=[f"R@{k}" for k in ks], ylim=(0, 1.1))  # fmt: skip
    left.legend()
    right.hist(np.minimum(table["rank"], 50), bins=50, range=(1, 51), color="tab:orange")
    right.set(title="rank of the best positive (capped at 50)", xlabel="rank", ylabel="queries")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_f1(table: pd.DataFrame, title: str = "", *, top: int = 30):
    """The coarse-class confusion heat map (`attrs["lv1_confusion"]`, row-normalised) and the per-class
    F1 of the `top` largest classes, with the `attrs["scores"]` in the title (wbdc)."""
    confusion = table.attrs.get("lv1_confusion")
    fig, axes = plt.subplots(1, 2 if confusion is not None else 1, figsize=(13, 5.2), squeeze=False)
    if confusion is not None:
        ax = axes[0][0]
        rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ticks = np.arange(len(confusion))
        ax.set_xticks(ticks, [f"{t:02d}" for t in ticks], fontsize=7, rotation=90)
        ax.set_yticks(ticks, [f"{t:02d}" for t in ticks], fontsize=7)
        ax.set(xlabel="predicted lv1", ylabel="true lv1", title="lv1 confusion (share of each true class)")
        fig.colorbar(image, ax=ax, fraction=0.046)
    ax = axes[0][-1]
    rows = table.head(top)  # the largest classes by support (the table is sorted by it)
    ax.barh(np.arange(len(rows)), rows["f1"], color=plt.cm.tab20(rows["lv1"].to_numpy() % 20))
    ax.set_yticks(
        np.arange(len(rows)), [f"{c} ({n})" for c, n in zip(rows["category_id"], rows["support"])], fontsize=7
    )
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="F1", title=f"per-class F1, {len(rows)} largest lv2 classes (support)")
    scores = table.attrs.get("scores")
    if scores:
        ax.set_title(ax.get_title() + "\n" + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
