"""Weighting an objective's raw terms: the one place a term's weight is applied (`fit` sums the result).

- `objective_weights`: check an objective's {term: weight} against its terms, drop the zero ones.
- `weighted`: wrap a raw-terms objective so it returns the weighted terms `fit` sums.
- `make_objective`: a task's objective factory, its weights and options checked, weighted.
- `objective_of`: a task's objective, composed of a terms function (`tagging`, `classification`,
  `contrastive`, `video_text`, `avfusion`) and the task's options.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping

import torch


def objective_weights(weights: Mapping[str, float], valid: Iterable[str]) -> dict[str, float]:
    """{term: weight} with the zero weights dropped.

    Raises:
        ValueError: an unknown term (listing `valid`), or a weight that is not a finite number >= 0
            (a negative weight would maximise a loss; NaN or inf would poison every step).
    """
    valid = tuple(valid)
    unknown = [k for k in weights if k not in valid]
    if unknown:
        raise ValueError(f"unknown objective term(s) {', '.join(unknown)}; valid terms: {', '.join(valid)}")
    bad = {}
    for k, v in weights.items():
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        if not ok:
            bad[k] = v
    if bad:
        raise ValueError(f"objective weights must be finite numbers >= 0; got {bad}")
    return {k: float(v) for k, v in weights.items() if float(v) != 0.0}


Objective = Callable[[torch.nn.Module, dict], dict[str, torch.Tensor]]


def weighted(objective: Objective, weights: Mapping[str, float]) -> Objective:
    """`objective` (model, batch) -> {term: raw loss}, turned into {term: weight · loss}.

    Only terms with a weight are kept (in the order the objective returns them, so `fit` sums the
    same floats in the same order every time); a term the objective did not compute is skipped. An
    objective may log a part of a term apart and weigh it like that term: its attribute
    `shares_weight` maps such a part to the term (e.g. {"branch_tag": "tag"}).
    """
    shared = getattr(objective, "shares_weight", {})
    weight_of = {**{part: weights[term] for part, term in shared.items() if term in weights}, **weights}
    if getattr(objective, "backward_inside", False):  # it runs its own backward passes (one term)
        if len(weights) != 1:
            raise ValueError(
                f"an objective that runs its own backward takes one weighted term, got {list(weights)}"
            )
        (weight,) = weights.values()

        def scaled_objective(model, batch, backward) -> dict[str, torch.Tensor]:
            terms = objective(model, batch, backward=lambda loss: backward(weight * loss))
            return {k: weight_of[k] * v for k, v in terms.items() if k in weight_of}

        scaled_objective.backward_inside = True  # type: ignore[attr-defined]
        scaled_objective.terms = tuple(weights)  # type: ignore[attr-defined]
        return _keep_accumulation_hints(objective, scaled_objective)

    def weighted_objective(model, batch) -> dict[str, torch.Tensor]:
        terms = objective(model, batch)
        return {k: weight_of[k] * v for k, v in terms.items() if k in weight_of}

    weighted_objective.terms = tuple(weights)  # type: ignore[attr-defined]
    return _keep_accumulation_hints(objective, weighted_objective)


def _keep_accumulation_hints(objective: Objective, wrapper: Objective) -> Objective:
    """Carry `summed_terms` and `count_items` (how `fit` weighs micro-batches) over to a wrapper."""
    for name in ("summed_terms", "count_items"):
        if hasattr(objective, name):
            setattr(wrapper, name, getattr(objective, name))
    return wrapper


def make_objective(
    factory: Callable[..., Objective],
    valid_terms: Iterable[str],
    data,
    weights: Mapping[str, float],
    options: Mapping | None = None,
) -> Objective:
    """`weighted(factory(data, active terms, **options), weights)`, with the weights and options checked.

    Args:
        factory: a task's `pretrain_objective` or `finetune_objective`.
        valid_terms: the terms that factory computes (`PRETRAIN_TERMS` / `FINETUNE_TERMS`).
        weights: {term: weight >= 0}; a zero weight switches the term off (it is not computed).
        options: the factory's keyword options (`objective_options`); an unknown one lists the valid ones.
    """
    from vmmlib.options import call_with_options

    checked = objective_weights(weights, valid_terms)
    return weighted(
        call_with_options(factory, data, tuple(checked), options=options, what="objective option"), checked
    )


def objective_of(terms_fn: Callable[..., dict[str, torch.Tensor]], **options) -> Objective:
    """A task's objective from a terms function and its options: `(model, batch, **call) ->
    terms_fn(model, batch, **call, **options)` (`call`: what `fit` passes, e.g. `backward`). The
    task sets the objective's attributes (`shares_weight`, `summed_terms`, `count_items`,
    `backward_inside`) on the result."""

    def objective(model, batch, **call) -> dict[str, torch.Tensor]:
        return terms_fn(model, batch, **call, **options)

    return objective
