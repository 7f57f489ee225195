"""`fit()`: one explicit training loop on Hugging Face Accelerate (CPU, one GPU, or several under
`accelerate launch` / `torchrun`), with exact resume.

What lives here:
- `fit`: AdamW with a backbone learning rate, warmup + decay per group (`vmmlib.optim`), gradient
  clipping, bf16 autocast on GPU, an EMA of the weights, periodic evaluation with best-checkpoint
  selection, a guard against non-finite steps, periodic atomic checkpoints and `history.csv`.
- re-exported: `check_fit_args` (`vmmlib.fit_args`: the check `fit` runs first, public so a notebook
  runs it before loading any data); `param_groups`, `lr_multiplier`, `EMA` (`vmmlib.optim`);
  `TrainState`, `make_loader`, `EpochShuffleSampler`, `save_weights`, `load_weights`
  (`vmmlib.checkpoint`).

Exact resume: a run killed at step k and resumed ends with bit-identical weights on CPU. `fit`
restores model, optimiser, scheduler, EMA and RNG states, re-seeds the sampler for the epoch and skips
the batches already consumed (`checkpoint.resumable_batches`). Randomness drawn *inside* a dataset's `__getitem__`
(augmentation) is resumed exactly only if it is derived from (epoch, index), e.g. via a `set_epoch`
method on the dataset; `fit` calls `set_epoch(epoch)` on the dataset and the sampler. Stopping on
purpose with `steps=k` and continuing with `steps=N` is exact only with `schedule_steps=N` in both
calls (the decay horizon defaults to `steps`). A checkpoint records the arguments that shape the
result and the caller's `fingerprint`; `fit` refuses to resume one made with others.

Off is 0: every optional number (`schedule_steps`, `ema_decay`, `grad_clip`, `backbone_lr`,
`eval_every`, `save_every`, `save_minutes`, `log_every`, `max_nonfinite_steps`) means "off / the
default" at 0, and None is accepted the same way.

Checkpoint layout under `out_dir`:

    model.safetensors                 final weights (EMA weights when ema_decay is set)
    history.csv                       one row per logged/evaluated step
    checkpoints/last/                 model.safetensors (raw weights), optimizer.pt, scheduler.pt,
                                      ema.safetensors (if EMA), rng.pt (one entry per process),
                                      history.json, state.json (written last: marks completeness)
    checkpoints/best/                 model.safetensors (EMA weights when set) + best.json
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vmmlib.checkpoint import (
    EpochShuffleSampler,
    TrainState,
    capture_rng_state,
    clear_fit_outputs,
    find_checkpoint,
    history_frame,
    history_row,
    load_training_checkpoint,
    load_weights,
    make_loader,
    resumable_batches,
    rng_preserved,
    save_best_checkpoint,
    save_training_checkpoint,
    save_weights,
    write_history_csv,
)
from vmmlib.fit_args import check_fit_args, resolve_mixed_precision, result_args
from vmmlib.optim import EMA, lr_multiplier, param_groups

__all__ = [
    "EMA",
    "EpochShuffleSampler",
    "FitResult",
    "TrainState",
    "check_fit_args",
    "fit",
    "load_weights",
    "lr_multiplier",
    "make_loader",
    "param_groups",
    "save_weights",
]

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        history: one row per logged or evaluated step (the content of `history.csv`).
        best_metric: best finite value of `metric` seen, or None.
        best_step: step of `best_metric`, or None.
        last_step: the step training ended at (== `steps`).
        resumed_from: the checkpoint step this call resumed from; 0 for a fresh run.
        paths: "out_dir", "model", "history", "last" and, when written, "best".
    """

    history: pd.DataFrame
    best_metric: float | None
    best_step: int | None
    last_step: int
    resumed_from: int
    paths: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    objective: Callable[[nn.Module, Any], Mapping[str, torch.Tensor]],
    *,
    steps: int,
    lr: float,
    out_dir: str | Path,
    backbone_lr: float | None = None,
    backbone_prefixes: tuple[str, ...] = ("text.",),
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    backbone_warmup_steps: int | None = None,
    schedule: str = "linear",
    schedule_steps: int | None = 0,
    decay_rate: float = 0.9,
    adam_eps: float = 1e-8,
    grad_clip: float | None = 1.0,
    ema_decay: float | None = 0.0,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    eval_every: int | None = 0,
    metric: str | None = None,
    greater_is_better: bool = True,
    save_every: int | None = 0,
    save_minutes: float | None = 0.0,
    resume: bool = True,
    fingerprint: str | None = None,
    max_nonfinite_steps: int | None = 5,
    mixed_precision: str = "auto",
    seed: int = 0,
    log_every: int | None = 10,
    progress: bool = True,
    accelerator: Accelerator | None = None,
) -> FitResult:
    """Train `model` for `steps` optimiser steps on batches of `train_loader`.

    Args:
        model: the module to train, in place. After `fit` it holds the final weights (the EMA weights
            when `ema_decay` is set), the ones written to `out_dir/model.safetensors`.
        train_loader: a plain torch DataLoader, iterated epoch by epoch (see `make_loader`).
        objective: `objective(model, batch) -> {"term": scalar tensor}`; `fit` sums the terms and logs
            each as `train/<term>` and the sum as `train/loss`. `model` is the Accelerate-prepared one
            (DDP-wrapped when distributed): call it, unwrap it only to reach attributes. An objective
            with the attribute `backward_inside = True` is called as `objective(model, batch,
            backward=fn)` and runs its own backward passes (e.g. contrastive gradient accumulation
            over cached features, `vmmlib.contrastive`); its terms are only logged.
        steps: optimiser steps in total, counting those done before a resume.
        lr: peak learning rate of the non-backbone groups.
        out_dir: run folder for checkpoints, history.csv and model.safetensors.
        backbone_lr: peak lr of parameters whose names start with `backbone_prefixes` (0: `lr`).
        backbone_prefixes: name prefixes of backbone parameters, e.g. ("text.",).
        weight_decay: AdamW decoupled weight decay; 0 for parameters with fewer than 2 dims.
        warmup_steps: linear warmup steps of the non-backbone groups.
        backbone_warmup_steps: warmup of the backbone groups (None: `warmup_steps`; 0 is no warmup).
        schedule: one of `vmmlib.optim.SCHEDULES` ("linear", "cosine", "constant", "exponential").
        schedule_steps: horizon of the decay (0: `steps`); seed 000 decays over 40k but stops at 3-4k.
            For "exponential" it is the decay interval.
        decay_rate: factor per `schedule_steps` of the "exponential" schedule.
        adam_eps: AdamW epsilon (WBDC rank-8 uses 1e-6).
        grad_clip: max global grad norm (0: no clipping; the norm is still computed and logged).
        ema_decay: keep an EMA of the weights with this decay (0: off); evaluation, the best
            checkpoint and the final model use it.
        eval_fn: `eval_fn(model) -> {"metric": float}`, run in eval mode under no_grad every
            `eval_every` steps and at the end. It runs on every process; the main process's dict is
            used, so under DDP it should compute the full-validation metric there (e.g. with
            `accelerator.gather_for_metrics`). RNG states are restored after it. A non-finite value
            is logged (history.csv shows `nan`/`inf`) with a warning and never selected as best.
        eval_every: evaluate every this many steps (0: only at the end).
        metric: key of `eval_fn`'s dict that selects `checkpoints/best` (None: no best checkpoint).
        greater_is_better: direction of `metric`.
        save_every: write `checkpoints/last` every this many steps (0: off; it is written at the end).
        save_minutes: also write it when this many wall-clock minutes passed since the last write
            (0: off). A rerun after a kill resumes from it.
        resume: continue from `out_dir/checkpoints/last` if it exists; False deletes what an earlier
            fit wrote in `out_dir` and starts over.
        fingerprint: a string identifying what made this run beyond `fit`'s own arguments (e.g. a hash
            of the notebook's parameters, `vmmlib.runs.params_fingerprint`). It is stored in the
            checkpoint; resuming a checkpoint with another fingerprint, or made with other
            result-shaping arguments (lr, schedule, ...), raises instead.
        max_nonfinite_steps: raise after this many consecutive skipped steps (0: never). A step whose
            loss, grad norm or buffers (BatchNorm statistics) are NaN/inf is skipped with a
            RuntimeWarning and leaves no trace in the model: its buffers are restored; the schedule
            still advances.
        mixed_precision: "auto" (bf16 on a bf16-capable GPU, else "no"), "no" or "bf16".
        seed: seeds python/numpy/torch (+ process index) and plain RandomSamplers per epoch.
        log_every: add a history row every this many steps (0: at the end only).
        progress: show a tqdm progress bar (main process only).
        accelerator: an existing `Accelerator` (e.g. from `notebook_launcher`); None builds one.

    Returns:
        FitResult; `history` has the columns step, epoch, lr/<group> (the rate the optimiser used at
        that step), train/loss, train/<term>, train/grad_norm (means over the finite steps since the
        previous row), train/skipped (non-finite steps in that window) and eval/<key>.

    Raises:
        RuntimeError: after `max_nonfinite_steps` consecutive non-finite steps, or when the final
            weights are non-finite and no finite checkpoint exists to fall back to.
        ValueError: on invalid arguments (`check_fit_args`), a checkpoint beyond `steps`, or one made
            with another fingerprint or other result-shaping arguments.
    """
    args = dict(locals())  # first statement: exactly the arguments
    check_fit_args(**{k: args[k] for k in inspect.signature(check_fit_args).parameters if k in args})
    if metric is not None and eval_fn is None:
        raise ValueError(f"metric={metric!r} needs an eval_fn")
    f = _prepare(model, train_loader, Path(out_dir), args)
    rng_states, resumed_from = _resume(f, resume=resume, fingerprint=fingerprint, args=args)
    rng = rng_states[min(f.accelerator.process_index, len(rng_states) - 1)] if rng_states else None
    batches = resumable_batches(train_loader, f.loader, f.state, seed=seed, rng_state=rng)
    state, optimizer = f.state, f.optimizer
    bar = tqdm(
        total=steps, initial=state.step, desc="fit", disable=not (progress and f.is_main), dynamic_ncols=True
    )
    last_save_step, last_save_time = resumed_from, time.monotonic()
    running = None  # smoothed loss for the progress bar only
    f.model.train()
    optimizer.zero_grad(set_to_none=True)
    try:
        while state.step < steps:
            batch = next(batches)
            state.step += 1
            lrs = {f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups}  # the rates of this step
            loss = _train_step(f, objective, batch)
            optimizer.zero_grad(set_to_none=True)
            f.scheduler.step()
            step = state.step

            if loss is not None:
                running = loss if running is None else 0.98 * running + 0.02 * loss
                bar.set_postfix(loss=f"{running:.4g}", refresh=False)
            bar.update(1)
            if (log_every and step % log_every == 0) or step == steps:
                history_row(f.rows, step, state.epoch).update({**lrs, **state.pop_window()})
            if eval_fn is not None and eval_every and step % eval_every == 0:
                _evaluate(f)
            if (save_every and step % save_every == 0) or _minutes_passed(f, last_save_time, save_minutes):
                _save_last(f)
                last_save_step, last_save_time = step, time.monotonic()
    finally:
        bar.close()
        batches.close()  # ends the epoch's iterator (an abandoned Accelerate one stays registered)

    if eval_fn is not None and state.last_eval_step != state.step:
        _evaluate(f)
    if last_save_step != state.step:
        _save_last(f)
    return _finish(f, resumed_from)


@dataclass
class _Fit:
    """What the pieces of `fit` share: the prepared objects, the run's state and options."""

    accelerator: Accelerator
    model: nn.Module  # as prepared (DDP-wrapped when distributed)
    unwrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loader: DataLoader  # as prepared
    ema: EMA | None
    state: TrainState
    rows: list[dict[str, Any]]
    paths: dict[str, Path]
    args: dict[str, Any]

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


def _prepare(model: nn.Module, train_loader: DataLoader, out_dir: Path, args: dict[str, Any]) -> _Fit:
    """Build the accelerator, optimiser, schedule and EMA, and prepare model and loader."""
    precision = resolve_mixed_precision(args["mixed_precision"])
    accelerator = args["accelerator"]
    if accelerator is None:
        accelerator = Accelerator(mixed_precision=precision)
    elif args["mixed_precision"] != "auto" and accelerator.mixed_precision != precision:
        raise ValueError(
            f"mixed_precision={precision!r}; the accelerator uses {accelerator.mixed_precision!r}"
        )
    world = accelerator.num_processes
    if world == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        warnings.warn(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but the Accelerator runs one process: every process "
            "would train alone and write the same out_dir (on CPU, pass Accelerator(cpu=True))",
            RuntimeWarning,
            stacklevel=3,
        )
    set_seed(args["seed"], device_specific=True)
    model.to(accelerator.device)  # before the optimiser: fused AdamW checks devices at construction
    backbone_lr = args["backbone_lr"] or None
    groups = param_groups(
        model, lr=args["lr"], weight_decay=args["weight_decay"], backbone_lr=backbone_lr,
        backbone_prefixes=args["backbone_prefixes"],
    )  # fmt: skip
    optimizer = torch.optim.AdamW(
        groups, lr=args["lr"], eps=args["adam_eps"], fused=accelerator.device.type == "cuda"
    )
    warmup = args["warmup_steps"]
    backbone_warmup = warmup if args["backbone_warmup_steps"] is None else args["backbone_warmup_steps"]
    horizon = args["schedule_steps"] or args["steps"]
    multipliers = [
        functools.partial(
            lr_multiplier,
            warmup_steps=backbone_warmup if g["name"] == "backbone" else warmup,
            total_steps=horizon,
            schedule=args["schedule"],
            decay_rate=args["decay_rate"],
        )
        for g in groups
    ]
    # Not prepared: Accelerate's scheduler wrapper steps num_processes times per call; we step once.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multipliers)
    prepared, optimizer, loader = accelerator.prepare(model, optimizer, train_loader)
    unwrapped = accelerator.unwrap_model(prepared)
    paths = {"out_dir": out_dir, "model": out_dir / "model.safetensors", "history": out_dir / "history.csv"}
    paths["last"] = out_dir / "checkpoints" / "last"
    return _Fit(
        accelerator=accelerator, model=prepared, unwrapped=unwrapped, optimizer=optimizer,
        scheduler=scheduler, loader=loader, ema=EMA(unwrapped, args["ema_decay"]) if args["ema_decay"] else None,
        state=TrainState(seed=args["seed"], num_processes=world), rows=[], paths=paths, args=args,
    )  # fmt: skip


def _resume(
    f: _Fit, *, resume: bool, fingerprint: str | None, args: dict[str, Any]
) -> tuple[list | None, int]:
    """Load `checkpoints/last` when resuming (checking it was made the same way), or clear old outputs.

    Returns:
        (the checkpoint's RNG states or None, the step resumed from; 0 for a fresh start).
    """
    fit_args = result_args(args)
    f.state.fingerprint, f.state.fit_args = fingerprint, fit_args
    last_dir = find_checkpoint(f.paths["last"], marker="state.json") if resume else None
    if last_dir is None:
        if not resume and f.is_main:
            clear_fit_outputs(f.paths["out_dir"])
        f.accelerator.wait_for_everyone()
        return None, 0
    saved = TrainState.from_dict(json.loads((last_dir / "state.json").read_text()))
    _check_same_run(last_dir, saved, fingerprint, fit_args)
    if saved.step > args["steps"]:
        raise ValueError(
            f"{last_dir} is at step {saved.step} > steps={args['steps']}; raise steps or resume=False"
        )
    loaded = load_training_checkpoint(
        last_dir, model=f.unwrapped, optimizer=f.optimizer, scheduler=f.scheduler
    )
    f.state, f.rows = TrainState.from_dict(loaded["state"]), loaded["history_rows"]
    f.state.fingerprint, f.state.fit_args = fingerprint, fit_args
    if f.ema is not None:
        if loaded["ema_state"] is None:
            raise FileNotFoundError(f"ema_decay is set but {last_dir} has no ema.safetensors")
        f.ema.load_state_dict(loaded["ema_state"])
    if f.state.seed != args["seed"] or f.state.num_processes != f.world:
        warnings.warn(
            f"resuming a run made with seed={f.state.seed} on {f.state.num_processes} processes "
            f"with seed={args['seed']} on {f.world}: the result will not be exact",
            RuntimeWarning,
            stacklevel=3,
        )
    logger.info("resuming from %s at step %d", last_dir, f.state.step)
    if f.is_main:  # drop rows a killed run logged after its last checkpoint
        write_history_csv(f.rows, f.paths["history"])
    f.accelerator.wait_for_everyone()
    return loaded["rng_states"], f.state.step


def _check_same_run(last_dir: Path, saved: TrainState, fingerprint: str | None, fit_args: dict) -> None:
    """Raise ValueError when the checkpoint was made with another fingerprint or other arguments."""
    differ = []
    if saved.fit_args is not None:  # checkpoints written before fit recorded its arguments have none
        differ = [
            f"{k}: {saved.fit_args.get(k)!r} → {v!r}"
            for k, v in fit_args.items()
            if saved.fit_args.get(k) != v
        ]
    if saved.fingerprint != fingerprint and (saved.fit_args is not None or fingerprint is not None):
        differ.append(f"fingerprint: {saved.fingerprint!r} → {fingerprint!r}")
    if differ:
        raise ValueError(
            f"{last_dir} was made by a different run ({'; '.join(differ)}); refusing to resume it. "
            "Pass resume=False to start afresh (it deletes the old checkpoints), or another out_dir."
        )


def _train_step(f: _Fit, objective: Callable, batch: Any) -> float | None:
    """One forward/backward/optimiser step; returns the loss, or None when the step was skipped.

    A step whose loss, grad norm or buffers are non-finite is skipped: no optimiser or EMA update,
    and the buffers the forward pass wrote (BatchNorm running statistics) are restored.
    """
    state, args = f.state, f.args
    buffers = list(f.unwrapped.buffers())
    saved_buffers = [b.detach().clone() for b in buffers]  # small: norm statistics, position ids
    if getattr(objective, "backward_inside", False):  # e.g. contrastive accumulation over cached features
        terms = objective(f.model, batch, backward=f.accelerator.backward)
        loss = _sum_terms({k: v.detach() for k, v in terms.items()})
    else:
        terms = objective(f.model, batch)
        loss = _sum_terms(terms)
        f.accelerator.backward(loss)
    params = [p for g in f.optimizer.param_groups for p in g["params"]]
    grad_norm = f.accelerator.clip_grad_norm_(params, args["grad_clip"] or math.inf)
    if grad_norm is None:  # DeepSpeed clips inside its engine
        grad_norm = torch.zeros(())
    floating = [b for b in buffers if b.is_floating_point()]
    buffers_ok = (
        torch.stack([torch.isfinite(b).all() for b in floating]).all() if floating else torch.ones(())
    )
    values = torch.stack(
        [loss.detach(), grad_norm.detach().float().to(loss.device), buffers_ok.float().to(loss.device)]
        + [t.detach().float().reshape(()) for t in terms.values()]
    )
    if f.world > 1:  # every process then takes the same skip decision
        values = f.accelerator.reduce(values, reduction="mean")
    loss_value, norm_value, buffers_value, *term_values = values.tolist()
    if math.isfinite(loss_value) and math.isfinite(norm_value) and buffers_value == 1.0:
        f.optimizer.step()
        if f.ema is not None:
            f.ema.update(f.unwrapped)
        state.nonfinite_in_a_row = 0
        state.accumulate({"loss": loss_value, **dict(zip(terms, term_values)), "grad_norm": norm_value})
        return loss_value
    with torch.no_grad():
        for b, old in zip(buffers, saved_buffers):
            b.copy_(old)
    state.nonfinite_in_a_row += 1
    state.window["skipped"] += 1
    last_terms = dict(zip(terms, term_values), grad_norm=norm_value, buffers_finite=buffers_value == 1.0)
    if args["max_nonfinite_steps"] and state.nonfinite_in_a_row >= args["max_nonfinite_steps"]:
        raise RuntimeError(
            f"loss was non-finite for {state.nonfinite_in_a_row} consecutive steps at step {state.step}; "
            f"last terms: {last_terms}"
        )
    warnings.warn(
        f"step {state.step}: non-finite loss, grad norm or buffers; optimiser step skipped, buffers restored; "
        f"terms: {last_terms}",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def _evaluate(f: _Fit) -> None:
    """Run `eval_fn` (EMA weights applied), log it, and keep the best finite `metric` in checkpoints/best."""
    state, args, step = f.state, f.args, f.state.step
    metric = args["metric"]
    with rng_preserved(), f.ema.applied(f.unwrapped) if f.ema is not None else nullcontext():
        f.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in args["eval_fn"](f.unwrapped).items()}
        f.model.train()
        if f.world > 1:
            metrics = broadcast_object_list([metrics])[0]
        history_row(f.rows, step, state.epoch).update({f"eval/{k}": v for k, v in metrics.items()})
        state.last_eval_step = step
        if metric is not None and metric not in metrics:
            raise KeyError(f"metric {metric!r} is not among eval_fn's keys {sorted(metrics)}")
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            warnings.warn(
                f"step {step}: evaluation gave non-finite {bad}; logged, never selected as best",
                RuntimeWarning,
                stacklevel=3,
            )
        value, best = (metrics[metric] if metric else math.nan), state.best_metric
        better = best is None or (value > best if args["greater_is_better"] else value < best)
        if math.isfinite(value) and better:
            state.best_metric, state.best_step = value, step
            if f.is_main:
                save_best_checkpoint(
                    f.paths["out_dir"] / "checkpoints" / "best", f.unwrapped, step=step, metric=metric,
                    value=value, greater_is_better=args["greater_is_better"],
                )  # fmt: skip
            f.accelerator.wait_for_everyone()
    if f.is_main:
        write_history_csv(f.rows, f.paths["history"])


def _minutes_passed(f: _Fit, since: float, minutes: float | None) -> bool:
    """Whether `minutes` (0/None: never) of wall-clock time passed since `since`, as the main process sees it."""
    if not minutes:
        return False
    due = time.monotonic() - since >= 60.0 * minutes
    return broadcast_object_list([due])[0] if f.world > 1 else due


def _save_last(f: _Fit) -> None:
    """Write `checkpoints/last`; with non-finite weights keep the previous one (and warn)."""
    if not _weights_finite(f):
        warnings.warn(
            f"step {f.state.step}: the weights hold NaN/inf; {f.paths['last']} keeps the last finite checkpoint",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    rng_all = [capture_rng_state()]
    if f.world > 1:
        rng_all = gather_object(rng_all)
    if f.is_main:
        save_training_checkpoint(
            f.paths["last"], model=f.unwrapped, optimizer=f.optimizer, scheduler=f.scheduler,
            ema_state=f.ema.state_dict() if f.ema is not None else None, rng_states=rng_all,
            state=dataclasses.asdict(f.state), history_rows=f.rows,
        )  # fmt: skip
        write_history_csv(f.rows, f.paths["history"])
    f.accelerator.wait_for_everyone()


def _weights_finite(f: _Fit) -> bool:
    tensors = list(f.unwrapped.state_dict().values())
    if f.ema is not None:
        tensors += list(f.ema.state_dict().values())
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def _finish(f: _Fit, resumed_from: int) -> FitResult:
    """Write the final weights (EMA when set) and history; build the result."""
    if f.ema is not None:
        f.ema.copy_to(f.unwrapped)  # the model leaves fit holding the weights of model.safetensors
    if not _weights_finite(f):
        ckpt = f.paths["out_dir"] / "checkpoints"
        fallback = find_checkpoint(ckpt / "best", marker="best.json") or find_checkpoint(
            ckpt / "last", marker="state.json"
        )
        if fallback is None:
            raise RuntimeError(f"the final weights hold NaN/inf and {ckpt} holds no finite checkpoint")
        warnings.warn(
            f"the final weights hold NaN/inf; {f.paths['model']} gets the weights of {fallback}",
            RuntimeWarning,
            stacklevel=3,
        )
        load_weights(f.unwrapped, fallback / "model.safetensors")
    if f.is_main:
        save_weights(f.unwrapped, f.paths["model"])
        write_history_csv(f.rows, f.paths["history"])
    f.accelerator.wait_for_everyone()
    if (f.paths["out_dir"] / "checkpoints" / "best").is_dir():
        f.paths["best"] = f.paths["out_dir"] / "checkpoints" / "best"
    f.accelerator.unwrap_model(f.model, keep_fp32_wrapper=False)  # undo Accelerate's autocast forward wrapper
    state = f.state
    return FitResult(
        history=history_frame(f.rows), best_metric=state.best_metric, best_step=state.best_step,
        last_step=state.step, resumed_from=resumed_from, paths=f.paths,
    )  # fmt: skip


def _sum_terms(terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Validate the objective's output and sum its terms in fp32."""
    if not isinstance(terms, Mapping) or not terms:
        raise TypeError(f"objective must return a non-empty dict of named scalar losses, got {type(terms)}")
    for k, t in terms.items():
        if not (torch.is_tensor(t) and t.numel() == 1 and t.is_floating_point()):
            raise TypeError(f"loss term {k!r} must be a floating scalar tensor, got {t!r:.80}")
    if {"grad_norm", "skipped"} & set(terms) or ("loss" in terms and len(terms) > 1):
        raise ValueError(
            f"term names {list(terms)} clash with the logged 'loss' (sum), 'grad_norm', 'skipped'"
        )
    return torch.stack([t.float().reshape(()) for t in terms.values()]).sum()
