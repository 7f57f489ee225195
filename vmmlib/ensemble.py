"""Combine saved predictions of several models, and search their weights.

Ensembling reads only run-folder files (predictions with ids); nothing is recomputed here.
`search_weights` is Bayesian optimisation (`bayes_opt`) of an out-of-fold score over per-model
weights, as seed 003's `Ensemble.ipynb` does — with the per-model weight vector its stored
objective meant to build (SPEC §4.8), and the search's path kept for a convergence plot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class WeightSearch:
    weights: list[float]  # best per-model weights, normalised to sum to 1
    score: float  # objective at the best weights
    history: pd.DataFrame  # one row per evaluation: iteration, score, best_so_far, weight_0..weight_{M-1}
    extra: dict  # best values of any extra parameters searched (e.g. a rank-decay constant)


def search_weights(
    objective: Callable[..., float],
    n_models: int,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    extra_bounds: dict[str, tuple[float, float]] | None = None,
    init_points: int = 5,
    n_iter: int = 25,
    seed: int = 7,
) -> WeightSearch:
    """Maximise `objective(weights, **extra)` over per-model weights with Bayesian optimisation.

    Args:
        objective: takes a list of `n_models` weights (and keyword extras) and returns a score to
            maximise (e.g. out-of-fold Spearman or segment mAP).
        bounds: range of each model's weight (the seed used [0, 200]; only ratios matter here).
        extra_bounds: further parameters searched jointly, e.g. {"rank_decay": (0, 10)} (seed 003's w0).
        init_points, n_iter: random probes, then guided ones (`bayes_opt` semantics).
        seed: `random_state` (seed 003 used 7).
    """
    from bayes_opt import BayesianOptimization

    names = [f"weight_{m}" for m in range(n_models)]
    extra_bounds = dict(extra_bounds or {})
    clash = set(extra_bounds) & set(names)
    if clash:
        raise ValueError(f"extra parameter names {sorted(clash)} clash with the weight names")
    pbounds = {**{n: bounds for n in names}, **extra_bounds}

    def f(**kw) -> float:
        weights = [kw[n] for n in names]
        if sum(weights) <= 0:
            return -1.0
        score = objective(weights, **{k: kw[k] for k in extra_bounds})
        return float(score) if np.isfinite(score) else -1.0

    opt = BayesianOptimization(
        f=f, pbounds=pbounds, random_state=seed, verbose=0, allow_duplicate_points=True
    )
    # An equal-weight probe first: the search starts from the plain average, never below it.
    opt.probe(
        {
            **{n: (bounds[0] + bounds[1]) / 2 for n in names},
            **{k: sum(b) / 2 for k, b in extra_bounds.items()},
        }
    )
    opt.maximize(init_points=init_points, n_iter=n_iter)
    rows = [{"iteration": i, "score": r["target"], **r["params"]} for i, r in enumerate(opt.res)]
    history = pd.DataFrame(rows)
    history["best_so_far"] = history["score"].cummax()
    best = opt.max["params"]
    raw = np.array([best[n] for n in names], dtype=np.float64)
    return WeightSearch(
        weights=(raw / raw.sum()).tolist(),
        score=float(opt.max["target"]),
        history=history,
        extra={k: float(best[k]) for k in extra_bounds},
    )


def weighted_sum(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Σ_m w_m · arrays[m] (all of one shape), in float32."""
    if len(arrays) != len(weights):
        raise ValueError(f"{len(arrays)} arrays but {len(weights)} weights")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"arrays differ in shape: {sorted(shapes)}")
    return sum(float(w) * a.astype(np.float32) for w, a in zip(weights, arrays)).astype(np.float32)


def align_by_id(
    ids: Sequence[Sequence[str]], arrays: Sequence[np.ndarray]
) -> tuple[list[str], list[np.ndarray]]:
    """Reorder several models' (ids, rows) to the first model's id order; every model must cover it."""
    return list(ids[0]), [array[rows] for array, rows in zip(arrays, align_rows(ids))]


def weighted_arrays(
    predictions: Sequence[dict], weights: Sequence[float], key, values: Sequence[str], *,
    what: str = "predictions", dtype=np.float32,
) -> dict:  # fmt: skip
    """The first prediction's arrays with `values` replaced by Σ_m w_m · values_m, every model's rows
    aligned to the first's by `key` (an array name, or a tuple of names whose rows together are the
    id); a model lacking one of the first's ids raises ValueError("the models' {what} differ")."""
    _check_weights(predictions, weights)
    if isinstance(key, str):
        ids = [p[key].tolist() for p in predictions]
    else:
        ids = [list(zip(*(p[k].tolist() for k in key))) for p in predictions]
    try:
        order = align_rows(ids)
    except KeyError as e:
        raise ValueError(f"the models' {what} differ: {e.args[0]}") from None
    out = dict(predictions[0])
    for name in values:
        out[name] = sum(
            float(w) * np.asarray(p[name])[i].astype(dtype) for w, p, i in zip(weights, predictions, order)
        ).astype(dtype)
    return out


def align_rows(ids: Sequence[Sequence]) -> list[np.ndarray]:
    """Each model's row index of the first model's ids, in that order: the one id-aligner of the
    ensembles. Every model must cover the first model's ids (KeyError naming one it lacks)."""
    out = []
    for model_ids in ids:
        row = {v: i for i, v in enumerate(model_ids)}
        missing = [v for v in ids[0] if v not in row]
        if missing:
            raise KeyError(f"a model has no prediction for id {missing[0]} ({len(missing)} missing)")
        out.append(np.array([row[v] for v in ids[0]], np.int64))
    return out


def _options_of(fn: Callable, skip: int) -> set[str]:
    import inspect

    P = inspect.Parameter
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name for p in params if p.kind in (P.KEYWORD_ONLY, P.POSITIONAL_OR_KEYWORD)}


def split_options(task, options: dict) -> tuple[dict, dict]:
    """(combine's options, the writer's options) of `options`; one that neither takes raises."""
    combine_names, writer_names = _options_of(task.combine, 2), _options_of(task.write_predictions, 2)
    unknown = sorted(set(options) - combine_names - writer_names)
    if unknown:
        valid = ", ".join(sorted(combine_names | writer_names)) or "none"
        raise ValueError(f"unknown ensemble option(s) {', '.join(unknown)}; valid: {valid}")
    return (
        {k: v for k, v in options.items() if k in combine_names},
        {k: v for k, v in options.items() if k in writer_names},
    )


def _check_weights(predictions: Sequence, weights: Sequence[float]) -> None:
    if len(weights) != len(predictions):
        raise ValueError(f"{len(weights)} weights for {len(predictions)} models")


def oof_scorer(task, oofs: list[dict], data, **options) -> Callable[..., float]:
    """`score(weights, **searched)` -> `task.score_oof` of `task.combine(oofs, weights, ...)`: the
    out-of-fold METRIC of the weighted ensemble. Options meant for the writer are taken and ignored."""
    combine_options, _ = split_options(task, options)
    task.combine(oofs, [1.0] * len(oofs), **combine_options)  # models that do not align fail now

    def score(weights, **searched) -> float:
        _check_weights(oofs, weights)
        return task.score_oof(task.combine(oofs, weights, **combine_options, **searched), data)

    return score


def write_submission(task, out_dir, predictions: list[dict], weights, **options):
    """`task.write_predictions` of `task.combine(predictions, weights, ...)`, each given its options."""
    from pathlib import Path

    combine_options, writer_options = split_options(task, options)
    _check_weights(predictions, weights)
    combined = task.combine(predictions, weights, **combine_options)
    return task.write_predictions(Path(out_dir), combined, **writer_options)
