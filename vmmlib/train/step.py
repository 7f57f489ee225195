"""One optimiser step of `fit`, with no device→host read: gradient accumulation over micro-batches,
a non-finite guard decided on the device, and the deferred read of the logged values.

- `train_step`: forward/backward over `grad_accum_steps` micro-batches (DDP syncs only on the last),
  each loss weighted so the gradients are those of one batch holding them all; clip; then the
  optimiser step, the model's `after_optimizer_step` and the EMA update, all *kept only where* the
  loss, grad norm and buffers are finite, decided on the device as `torch.cuda.amp.GradScaler` does
  with `found_inf`: a fused AdamW gets `found_inf` and skips the update in its kernel; another
  optimiser's parameters and moments are put back with `torch.where`. The step's values stay on the
  device, queued in `pending`.
- `flush`: the one read, every `log_every` steps (and before a checkpoint or at the end): the queued
  values reach the host at once; the window sums, the skip warnings and the give-up error follow from
  them, as if each step had been read at once.

Accumulation and the loss weights: a term is a mean over its batch's items by default (a term that
does not depend on the batch, such as an L2 penalty, is right that way too), so in the micro-batch of
n_i items it gets the weight n_i / Σ n_j (1/N for equal sizes; n_i from the objective's
`count_items(batch)` when the mean is over something else, e.g. the labels not ignored). The terms
named in the objective's `summed_terms` are sums over the items and get 1 (qqbrowser's mse and kl).
An objective whose loss couples the items of a batch (in-batch negatives of a contrastive loss) is
*not* the larger batch's loss when accumulated this way: use its own cached-feature accumulation
(`vmmlib.objectives.contrastive`, MUGE's `accumulate`) for that.

Several processes are micro-batches side by side: DDP averages the W processes' gradients, so a
process's micro-batch i gets W · n_i / Σ n (the sum over every process, all-reduced on the device)
and a summed term gets W. The gradients, and the logged values (averaged over the processes), are
then those of the global batch, also when the processes' counts differ (answers in the vocabulary).
One process with one micro-batch takes none of this: its loss is backpropagated as it is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from vmmlib.train.config import sum_terms

__all__ = ["batch_items", "flush", "train_step"]


def batch_items(batch: Any) -> int | None:
    """The number of items in a batch: the first dimension of its first tensor (None: no tensor)."""
    if torch.is_tensor(batch):
        return int(batch.shape[0]) if batch.ndim else None
    values = (
        batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, list | tuple) else ()
    )
    for v in values:
        n = batch_items(v)
        if n is not None:
            return n
    return None


def _loss_weights(f: Any, objective: Callable, micro: Sequence[Any]) -> list[Any]:
    """Each micro-batch's weight for the terms that are means over its items: W · n_i / Σ n_j (W
    processes, the sum over all of them), with n_i from the objective's `count_items(batch)` (e.g. the
    labels not ignored; a device tensor is fine) or `batch_items`; 1/N when a size is unknown."""
    count = getattr(objective, "count_items", batch_items)
    sizes = [count(b) for b in micro]
    if any(n is None for n in sizes):
        return [1.0 / len(micro)] * len(micro)
    total = sum(sizes)
    if f.world > 1:  # one all-reduce on the device, no host read
        device = f.accelerator.device
        total = torch.as_tensor(total, dtype=torch.float32, device=device).reshape(())
        total = f.accelerator.reduce(total, reduction="sum") / f.world
    return [n / total for n in sizes]


def _summed_weight(f: Any) -> int:
    """The weight of a term summed over the items: the number of processes (DDP averages them)."""
    return f.world


def _loss_backward(f: Any, objective: Callable, batch: Any, weight: Any) -> tuple[dict, torch.Tensor]:
    """The objective's terms and their sum (detached, unweighted), after the backward pass of the
    terms weighted for accumulation (`weight` None: no accumulation); gradients accumulate."""
    if getattr(objective, "backward_inside", False):  # e.g. contrastive accumulation over cached features
        scaled = f.accelerator.backward if weight is None else (lambda t: f.accelerator.backward(t * weight))
        terms = objective(f.model, batch, backward=scaled)
        return terms, sum_terms({k: v.detach() for k, v in terms.items()})
    terms = objective(f.model, batch)
    loss = sum_terms(terms)
    if weight is None:
        f.accelerator.backward(loss)
    else:
        summed, w_sum = getattr(objective, "summed_terms", ()), _summed_weight(f)
        f.accelerator.backward(
            sum_terms(
                {k: (v * w_sum if w_sum != 1 else v) if k in summed else v * weight for k, v in terms.items()}
            )
        )
    return terms, loss.detach()


def _accumulate(f: Any, objective: Callable, micro: Sequence[Any]) -> tuple[dict, torch.Tensor]:
    """Forward/backward over the micro-batches (DDP's all-reduce only on the last); the terms and the
    loss of the batch they make together (sums of summed terms, weighted means of the others)."""
    if len(micro) == 1 and f.world == 1:
        return _one_pass(f, objective, micro[0], None)
    summed, w_sum = getattr(objective, "summed_terms", ()), _summed_weight(f)
    terms_sum: dict[str, torch.Tensor] = {}
    for i, (batch, w) in enumerate(zip(micro, _loss_weights(f, objective, micro))):
        last = i == len(micro) - 1
        with nullcontext() if last or f.world == 1 else f.accelerator.no_sync(f.model):
            terms, _ = _one_pass(f, objective, batch, w)
        for k, v in terms.items():
            v = (w_sum * v if w_sum != 1 else v) if k in summed else w * v
            terms_sum[k] = terms_sum[k] + v if k in terms_sum else v
    loss = torch.stack([v for k, v in terms_sum.items() if k != "adv_loss"]).sum()
    return terms_sum, loss


def _one_pass(f: Any, objective: Callable, batch: Any, weight: Any) -> tuple[dict, torch.Tensor]:
    """Forward/backward on one (micro-)batch, plus the adversary's passes; detached terms and loss."""
    terms, loss = _loss_backward(f, objective, batch, weight)
    terms = {k: v.detach().float().reshape(()) for k, v in terms.items()}
    if f.adversary is not None:  # FGM / PGD: more forward + backward passes on perturbed embeddings
        adv_loss = f.adversary.attack(lambda: _loss_backward(f, objective, batch, weight)[1])
        terms["adv_loss"] = adv_loss.detach().float().reshape(())
    return terms, loss


def train_step(f: Any, objective: Callable, micro: Sequence[Any]) -> None:
    """One optimiser step over the micro-batches `micro`, kept only if finite; no host read.

    A step whose loss, grad norm or buffers (BatchNorm statistics) are non-finite leaves no trace:
    no optimiser or EMA update, its buffers restored. Its values are queued in `f.pending`.
    """
    buffers = list(f.unwrapped.buffers())
    saved_buffers = [b.detach().clone() for b in buffers]  # small: norm statistics, position ids
    terms, loss = _accumulate(f, objective, micro)
    params = [p for g in f.optimizer.param_groups for p in g["params"]]
    grad_norm = f.accelerator.clip_grad_norm_(params, f.args["grad_clip"] or math.inf)
    if grad_norm is None:  # DeepSpeed clips inside its engine
        grad_norm = torch.zeros((), device=loss.device)
    floating = [b for b in buffers if b.is_floating_point()]
    buffers_ok = (
        torch.stack([torch.isfinite(b).all() for b in floating]).all() if floating else torch.ones(())
    )
    values = torch.stack(
        [loss.float(), grad_norm.detach().float().to(loss.device), buffers_ok.float().to(loss.device)]
        + [t.to(loss.device) for t in terms.values()]
    )
    if f.world > 1:  # every process then takes the same skip decision
        values = f.accelerator.reduce(values, reduction="mean")
    ok = torch.isfinite(values[0]) & torch.isfinite(values[1]) & (values[2] == 1.0)
    _guarded_update(f, params, ok)
    with torch.no_grad():
        for b, old in zip(buffers, saved_buffers):
            b.copy_(torch.where(ok, b, old))
    f.pending.append((f.state.step, list(terms), values))


@torch.no_grad()
def _guarded_update(f: Any, params: list[torch.Tensor], ok: torch.Tensor) -> None:
    """Optimiser step, `after_optimizer_step` and EMA update where `ok` (a device bool) holds."""
    inner = getattr(f.optimizer, "optimizer", f.optimizer)  # Accelerate's wrapper → torch's optimiser
    fused = bool(inner.defaults.get("fused"))
    if fused:  # the kernel skips the update (and undoes the step count) when found_inf is 1
        inner.grad_scale, inner.found_inf = None, (~ok).float()
    else:  # keep the parameters and moments to put them back where the step is not finite
        old_params = [p.detach().clone() for p in params]
        old_state = [
            {k: v.clone() for k, v in inner.state.get(p, {}).items() if torch.is_tensor(v)} for p in params
        ]
    try:
        f.optimizer.step()
    finally:
        if fused:
            del inner.grad_scale, inner.found_inf
    after_step = getattr(f.unwrapped, "after_optimizer_step", None)
    if after_step is not None:  # the model's own constraint (CLIP's logit-scale clamp), EMA sees it
        after_step()
    if not fused:
        for p, old, state in zip(params, old_params, old_state):
            p.copy_(torch.where(ok, p, old))
            for k, v in inner.state.get(p, {}).items():
                if torch.is_tensor(v):  # a first step's fresh moments go back to Adam's zeros
                    v.copy_(torch.where(ok, v, state[k] if k in state else torch.zeros_like(v)))
    if f.ema is not None:
        f.ema.update(f.unwrapped, ok)


def flush(f: Any) -> float | None:
    """Read the queued steps' values (one device→host read) into the window; warn about each skipped
    step and raise after `max_nonfinite_steps` in a row. Returns the last finite loss, or None."""
    if not f.pending:
        return None
    pending, f.pending = f.pending, []
    rows = torch.cat([v for _, _, v in pending]).tolist()  # the one read
    state, limit, last_loss, at = f.state, f.args["max_nonfinite_steps"], None, 0
    for step, names, values in pending:
        loss, norm, buffers_value, *term_values = rows[at : at + len(values)]
        at += len(values)
        if math.isfinite(loss) and math.isfinite(norm) and buffers_value == 1.0:
            state.nonfinite_in_a_row = 0
            state.accumulate({"loss": loss, **dict(zip(names, term_values)), "grad_norm": norm})
            last_loss = loss
            continue
        state.nonfinite_in_a_row += 1
        state.window["skipped"] += 1
        last = dict(zip(names, term_values), grad_norm=norm, buffers_finite=buffers_value == 1.0)
        if limit and state.nonfinite_in_a_row >= limit:
            raise RuntimeError(
                f"loss was non-finite for {state.nonfinite_in_a_row} consecutive steps at step {step}; "
                f"last terms: {last}"
            )
        warnings.warn(
            f"step {step}: non-finite loss, grad norm or buffers; optimiser step skipped, buffers restored; "
            f"terms: {last}",
            RuntimeWarning,
            stacklevel=3,
        )
    return last_loss
