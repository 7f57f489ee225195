"""`fit()`: one explicit training loop on Hugging Face Accelerate (CPU, one GPU, or several under
`accelerate launch` / `torchrun`), with exact resume.

What lives here:
- `fit`: AdamW with a backbone learning rate and optional layer-wise decay, warmup + decay per group
  (`vmmlib.train.optim`), gradient accumulation, gradient clipping, bf16 autocast on GPU, an EMA of the
  weights, FGM/PGD adversarial training on the word embeddings (`vmmlib.train.adversarial`), SWA over
  periodic snapshots, periodic evaluation with best-checkpoint selection, a guard against non-finite
  steps decided on the device (`vmmlib.train.step`: no host sync per step), periodic atomic
  checkpoints and `history.csv`. Its options are the fields of one dataclass, `FitConfig`.
- re-exported: `FitConfig`, `check_fit_args` (for notebooks to run before loading data) and
  `fit_params` (the notebook parameters that are `fit` options) from `vmmlib.train.config`;
  `param_groups`, `lr_multiplier`, `EMA`, `SWA` (`vmmlib.train.optim`); `TrainState`, `make_loader`,
  `EpochShuffleSampler`, `save_weights`, `load_weights` (`vmmlib.train.checkpoint`).

Exact resume: a run killed at step k and resumed ends with bit-identical weights on CPU, every trick
on. `fit` restores model, optimiser, scheduler, EMA, SWA snapshots and RNG states, re-seeds the
sampler for the epoch and skips the batches already consumed (`checkpoint.resumable_batches`).
Randomness drawn *inside* a dataset's `__getitem__` (augmentation) is resumed exactly only if it is
derived from (epoch, index), e.g. via a `set_epoch` method on the dataset; `fit` calls
`set_epoch(epoch)` on the dataset and the sampler. Stopping on purpose with `steps=k` and continuing
with `steps=N` is exact only with `schedule_steps=N` in both calls (the decay horizon defaults to
`steps`). A checkpoint records the arguments that shape the result and the caller's `fingerprint`;
`fit` refuses to resume one made with others.

Off is 0: every optional number (`schedule_steps`, `ema_decay`, `grad_clip`, `backbone_lr`,
`eval_every`, `save_every`, `save_minutes`, `log_every`, `max_nonfinite_steps`, `layer_lr_decay`,
`swa_last`, `swa_every`) means "off / the default" at 0, and None is accepted the same way.

Gradient accumulation (`grad_accum_steps` N): each optimiser step takes N micro-batches, weighted so
the gradients are those of one batch holding them all; `steps`, the schedule, logging, checkpoints and
resume count optimiser steps (the data position counts batches, so a resume is exact).

Checkpoint layout under `out_dir`:

    model.safetensors                 final weights (EMA's when ema_decay is set; SWA mean with swa_last)
    history.csv                       one row per logged/evaluated step
    checkpoints/last/                 model.safetensors (raw weights), optimizer.pt, scheduler.pt,
                                      ema.safetensors (if EMA), swa.safetensors (if SWA), rng.pt
                                      (one entry per process), history.json, state.json (written last: marks completeness)
    checkpoints/best/                 model.safetensors (EMA weights when set) + best.json
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object, set_seed
from torch import nn
from torch.utils.data import DataLoader

from vmmlib.progress import progress as progress_bar
from vmmlib.train.adversarial import FGM, PGD, build_adversary
from vmmlib.train.checkpoint import (
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
from vmmlib.train.config import (
    FitConfig,
    check_fit_args,
    check_same_run,
    fit_params,
    fit_signature,
    optimizer_args,
    resolve_mixed_precision,
    result_args,
)
from vmmlib.train.optim import EMA, SWA, lr_multiplier, make_optimizer, param_groups, position_scheduler
from vmmlib.train.step import flush, train_step

__all__ = [
    "EMA",
    "SWA",
    "EpochShuffleSampler",
    "FitConfig",
    "FitResult",
    "TrainState",
    "check_fit_args",
    "fit",
]
__all__ += ["fit_params", "load_weights", "lr_multiplier", "make_loader", "param_groups", "save_weights"]

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
        swa_steps: the steps whose weights SWA averaged into the final model (empty: SWA off).
    """

    history: pd.DataFrame
    best_metric: float | None
    best_step: int | None
    last_step: int
    resumed_from: int
    paths: dict[str, Path] = field(default_factory=dict)
    swa_steps: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    objective: Callable[[nn.Module, Any], Mapping[str, torch.Tensor]],
    config: FitConfig | None = None,
    **options: Any,
) -> FitResult:
    """Train `model` for `steps` optimiser steps on batches of `train_loader`.

    Args:
        model: the module to train, in place. After `fit` it holds the final weights (the EMA weights
            when `ema_decay` is set), the ones written to `out_dir/model.safetensors`. A model with an
            `after_optimizer_step()` method has it called after every optimiser step taken (before
            the EMA update): constraints such as CLIP's logit-scale clamp.
        train_loader: a plain torch DataLoader, iterated epoch by epoch (see `make_loader`). With
            `grad_accum_steps` N, each optimiser step takes N of its batches (micro-batches).
        objective: `objective(model, batch) -> {"term": scalar tensor}`; `fit` sums the terms and logs
            each as `train/<term>` and the sum as `train/loss`. `model` is the Accelerate-prepared one
            (DDP-wrapped when distributed): call it, unwrap it only to reach attributes. An objective
            with the attribute `backward_inside = True` is called as `objective(model, batch,
            backward=fn)` and runs its own backward passes (e.g. contrastive gradient accumulation
            over cached features, `vmmlib.objectives.contrastive`); its terms are only logged. One with
            `loss_reduction = "sum"` sums over its batch (accumulation weights, `vmmlib.train.step`).
        config: a `FitConfig`; `options` (its field names, the keywords of this signature) replace
            its fields. Every option, its default and meaning: `vmmlib.train.config.FitConfig`.

    Notes on the options:
        - `eval_fn(model) -> {"metric": float}` runs in eval mode under no_grad every `eval_every`
          steps and at the end, on every process; the main process's dict is used. An `eval_fn`
          built on `vmmlib.predict.loop.predict_batches` (every task's) shares the batches among the
          processes and gathers the outputs: the metric is the whole validation set's, each batch
          run once. RNG states are restored after it. A non-finite value is logged with a warning, never best.
        - `swa_last`: the final model is the mean of the last this many snapshots, one every
          `swa_every` steps (0: `eval_every`) plus the final weights (EMA's when on); evaluated as
          `swa/<key>`, it becomes `checkpoints/best` when it beats the best evaluation.
        - `reset_optimizer`: on a resume, take the weights, EMA/SWA, step, data position and RNG from
          the checkpoint but start AdamW's moments afresh, on this run's schedule at the checkpoint's
          step; the optimiser's settings (`vmmlib.train.config.OPTIMIZER_ARGS`) may then differ.
        - `fingerprint` is stored in the checkpoint; resuming one with another fingerprint, or made
          with other result-shaping options (`result_args`: lr, schedule, ...), raises instead.
        - The non-finite guard: a step whose loss, grad norm or buffers are NaN/inf leaves no trace in
          the model (decided on the device, `vmmlib.train.step`); the schedule still advances. The
          values reach the host every `log_every` steps (and before a checkpoint): the RuntimeWarning
          for a skipped step, and the error after `max_nonfinite_steps` in a row, come then.

    Returns:
        FitResult; `history` has the columns step, epoch, lr/<group> (the rate the optimiser used at
        that step), train/loss, train/<term>, train/grad_norm (means over the finite steps since the
        previous row), train/skipped (non-finite steps in that window) and eval/<key>.

    Raises:
        RuntimeError: after `max_nonfinite_steps` consecutive non-finite steps, or when the final
            weights are non-finite and no finite checkpoint exists to fall back to.
        ValueError: on invalid options (`check_fit_args`), a checkpoint beyond `steps`, or one made
            with another fingerprint or other result-shaping options.
        TypeError: an unknown option.
    """
    args = FitConfig.make(config, **options).as_dict()
    check_fit_args(**args)
    steps, out_dir = args["steps"], args["out_dir"]
    eval_fn, eval_every, log_every = args["eval_fn"], args["eval_every"], args["log_every"]
    save_every, save_minutes, accum = args["save_every"], args["save_minutes"], args["grad_accum_steps"]
    swa_every = args["swa_every"] or eval_every
    f = _prepare(model, train_loader, Path(out_dir), args)
    batches, resumed_from = _start(f, train_loader, args)
    state, optimizer = f.state, f.optimizer
    bar = progress_bar(
        total=steps,
        initial=state.step,
        desc="fit",
        disable=not (args["progress"] and f.is_main),
        dynamic_ncols=True,
    )
    last_save_step, last_save_time = resumed_from, time.monotonic()
    running = None  # smoothed loss for the progress bar only
    f.model.train()
    optimizer.zero_grad(set_to_none=True)
    try:
        while state.step < steps:
            micro = [next(batches) for _ in range(accum)]
            state.step += 1
            lrs = {f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups}  # the rates of this step
            train_step(f, objective, micro)  # no host read: the values wait in f.pending
            optimizer.zero_grad(set_to_none=True)
            f.scheduler.step()
            step = state.step
            bar.update(1)
            log_now = (log_every and step % log_every == 0) or step == steps
            save_now = (save_every and step % save_every == 0) or _minutes_passed(
                f, last_save_time, save_minutes
            )
            if log_now or save_now:
                loss = flush(f)  # the one device→host read
                if loss is not None:
                    running = loss if running is None else 0.98 * running + 0.02 * loss
                    bar.set_postfix(loss=f"{running:.4g}", refresh=False)
            if log_now:
                history_row(f.rows, step, state.epoch).update({**lrs, **state.pop_window()})
            if eval_fn is not None and eval_every and step % eval_every == 0:
                _evaluate(f)
            if f.swa is not None and swa_every and step % swa_every == 0:
                _swa_snapshot(f)
            if save_now:
                _save_last(f)
                last_save_step, last_save_time = step, time.monotonic()
    finally:
        bar.close()
        batches.close()  # ends the epoch's iterator (an abandoned Accelerate one stays registered)

    flush(f)
    if eval_fn is not None and state.last_eval_step != state.step:
        _evaluate(f)
    if last_save_step != state.step:
        _save_last(f)
    return _finish(f, resumed_from)


# fit's keywords are FitConfig's fields: `inspect.signature(fit)` (notebooks' `check_options`) lists them
fit.__signature__ = fit_signature(list(inspect.signature(fit).parameters.values())[:4])


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
    adversary: FGM | PGD | None
    swa: SWA | None
    state: TrainState
    rows: list[dict[str, Any]]
    paths: dict[str, Path]
    args: dict[str, Any]
    pending: list[tuple[int, list[str], torch.Tensor]] = field(default_factory=list)  # steps not yet read

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


def _prepare(model: nn.Module, train_loader: DataLoader, out_dir: Path, args: dict[str, Any]) -> _Fit:
    """Build the accelerator, optimiser, schedule and EMA, and prepare model and loader."""
    if args["metric"] is not None and args["eval_fn"] is None:
        raise ValueError(f"metric={args['metric']!r} needs an eval_fn")
    precision = resolve_mixed_precision(args["mixed_precision"])
    accelerator = args["accelerator"]
    if accelerator is None:
        # a model may hold parameters the objective leaves unused (a pretraining head while fine-tuning)
        unused = DistributedDataParallelKwargs(find_unused_parameters=True)
        accelerator = Accelerator(mixed_precision=precision, kwargs_handlers=[unused])
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
    # The scheduler is not prepared: Accelerate's wrapper steps num_processes times per call; we step once.
    optimizer, scheduler = make_optimizer(model, **optimizer_args(args), fused=_fusable(accelerator.device))
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    adversary = build_adversary(
        args["adversarial"], model, trainable, epsilon=args["adv_epsilon"], alpha=args["adv_alpha"],
        steps=args["adv_steps"], pattern=args["adv_param_pattern"],
    )  # fmt: skip
    prepared, optimizer, loader = accelerator.prepare(model, optimizer, train_loader)
    unwrapped = accelerator.unwrap_model(prepared)
    paths = {"out_dir": out_dir, "model": out_dir / "model.safetensors", "history": out_dir / "history.csv"}
    paths["last"] = out_dir / "checkpoints" / "last"
    return _Fit(
        accelerator=accelerator, model=prepared, unwrapped=unwrapped, optimizer=optimizer,
        scheduler=scheduler, loader=loader, ema=EMA(unwrapped, args["ema_decay"]) if args["ema_decay"] else None,
        adversary=adversary, swa=SWA(args["swa_last"]) if args["swa_last"] else None,
        state=TrainState(seed=args["seed"], num_processes=world), rows=[], paths=paths, args=args,
    )  # fmt: skip


def _start(f: _Fit, train_loader: DataLoader, args: dict[str, Any]) -> tuple[Iterator[Any], int]:
    """Resume (or start afresh); the batches from the data position reached, and the step resumed from."""
    rng_states, resumed_from = _resume(f, resume=args["resume"], fingerprint=args["fingerprint"], args=args)
    rng = rng_states[min(f.accelerator.process_index, len(rng_states) - 1)] if rng_states else None
    batches = resumable_batches(train_loader, f.loader, f.state, seed=args["seed"], rng_state=rng)
    return batches, resumed_from


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
    reset = args["reset_optimizer"]
    check_same_run(last_dir, saved, fingerprint, fit_args, reset_optimizer=reset)
    if saved.step > args["steps"]:
        raise ValueError(
            f"{last_dir} is at step {saved.step} > steps={args['steps']}; raise steps or resume=False"
        )
    loaded = load_training_checkpoint(
        last_dir,
        model=f.unwrapped,
        optimizer=None if reset else f.optimizer,
        scheduler=None if reset else f.scheduler,
    )
    if reset:  # fresh moments; this run's schedule, at the checkpoint's step
        position_scheduler(f.scheduler, saved.step)
    f.state, f.rows = TrainState.from_dict(loaded["state"]), loaded["history_rows"]
    f.state.fingerprint, f.state.fit_args = fingerprint, fit_args
    if f.ema is not None:
        if loaded["ema_state"] is None:
            raise FileNotFoundError(f"ema_decay is set but {last_dir} has no ema.safetensors")
        f.ema.load_state_dict(loaded["ema_state"])
    if f.swa is not None:
        f.swa.load_state_dict(loaded["swa_state"] or {})
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


def _evaluate(f: _Fit, prefix: str = "eval") -> None:
    """Run `eval_fn` (EMA weights applied, except for "swa": the model holds the SWA mean), log it as
    `<prefix>/<key>`, and keep the best finite `metric` in checkpoints/best."""
    state, args, step = f.state, f.args, f.state.step
    metric = args["metric"]
    ema = f.ema is not None and prefix == "eval"
    with rng_preserved(), f.ema.applied(f.unwrapped) if ema else nullcontext():
        f.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in args["eval_fn"](f.unwrapped).items()}
        f.model.train()
        if f.world > 1:
            metrics = broadcast_object_list([metrics])[0]
        history_row(f.rows, step, state.epoch).update({f"{prefix}/{k}": v for k, v in metrics.items()})
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
            swa_state=f.swa.state_dict() if f.swa is not None else None,
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
    swa_steps = _swa_finish(f) if f.swa is not None else []
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
        last_step=state.step, resumed_from=resumed_from, paths=f.paths, swa_steps=swa_steps,
    )  # fmt: skip


def _swa_snapshot(f: _Fit) -> None:
    """Every `swa_every` steps: add the weights (EMA's when on) to SWA's snapshots."""
    with f.ema.applied(f.unwrapped) if f.ema is not None else nullcontext():
        f.swa.add(f.state.step, f.unwrapped.state_dict())


def _swa_finish(f: _Fit) -> list[int]:
    """Load the SWA mean (the final weights count as the newest snapshot) and evaluate it as `swa/<key>`
    (it becomes `checkpoints/best` when its `metric` beats the best). Returns the steps averaged."""
    averaged, steps = f.swa.average(f.state.step, f.unwrapped.state_dict())
    f.unwrapped.load_state_dict(averaged)
    if f.args["eval_fn"] is not None:
        _evaluate(f, prefix="swa")
    return steps


def _fusable(device: torch.device) -> bool:
    """Fused AdamW on CUDA and CPU: one kernel, and it skips a non-finite step from `found_inf` on the
    device (`vmmlib.train.step`) without copying the weights and moments aside."""
    return device.type in ("cuda", "cpu")
