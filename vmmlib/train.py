"""`fit()`: one explicit training loop on Hugging Face Accelerate (CPU, one GPU, or several under
`accelerate launch` / `torchrun`), with exact resume.

What lives here:
- `fit`: AdamW with a backbone learning rate and optional layer-wise decay, warmup + decay per group
  (`vmmlib.optim`), gradient clipping, bf16 autocast on GPU, an EMA of the weights, FGM/PGD
  adversarial training on the word embeddings (`vmmlib.adversarial`), SWA over the last evaluated
  weights, periodic evaluation with best-checkpoint selection, a guard against non-finite steps,
  periodic atomic checkpoints and `history.csv`.
- re-exported: `check_fit_args` (`vmmlib.fit_args`, for notebooks to run before loading data);
  `param_groups`, `lr_multiplier`, `EMA`, `SWA` (`vmmlib.optim`); `TrainState`, `make_loader`,
  `EpochShuffleSampler`, `save_weights`, `load_weights` (`vmmlib.checkpoint`).

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
`swa_last`) means "off / the
default" at 0, and None is accepted the same way.

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
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from torch import nn
from torch.utils.data import DataLoader

from vmmlib.adversarial import FGM, PGD, build_adversary
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
from vmmlib.fit_args import check_fit_args, check_same_run, resolve_mixed_precision, result_args, sum_terms
from vmmlib.optim import EMA, SWA, lr_multiplier, make_optimizer, param_groups, position_scheduler
from vmmlib.progress import progress as progress_bar

__all__ = ["EMA", "SWA", "EpochShuffleSampler", "FitResult", "TrainState", "check_fit_args", "fit"]
__all__ += ["load_weights", "lr_multiplier", "make_loader", "param_groups", "save_weights"]

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
    adversarial: str | None = "none",
    adv_epsilon: float = 1.0,
    adv_alpha: float = 0.3,
    adv_steps: int = 3,
    adv_param_pattern: str = "word_embeddings",
    layer_lr_decay: float | None = 0.0,
    swa_last: int | None = 0,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    eval_every: int | None = 0,
    metric: str | None = None,
    greater_is_better: bool = True,
    save_every: int | None = 0,
    save_minutes: float | None = 0.0,
    resume: bool = True,
    reset_optimizer: bool = False,
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
            when `ema_decay` is set), the ones written to `out_dir/model.safetensors`. A model with an
            `after_optimizer_step()` method has it called after every optimiser step taken (before
            the EMA update): constraints such as CLIP's logit-scale clamp.
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
        adversarial: "none", "fgm" or "pgd" on the parameters matching `adv_param_pattern` (SPEC §4.5,
            `vmmlib.adversarial`); the last adversarial loss is logged as `train/adv_loss`.
        adv_epsilon, adv_alpha, adv_steps: FGM's step / PGD's L2 ball ε, PGD's step α and K (1.0, 0.3, 3).
        adv_param_pattern: regex searched in parameter names (default: the text word-embedding table).
        layer_lr_decay: in (0, 1] (0: off): rate × decay**depth, depth by `vmmlib.optim.layer_depth`
            (head 0, top layer 1, embeddings deepest); groups logged as `lr/<backbone|others>/depth<d>`.
        swa_last: the final model is the mean of the last this many snapshots (0: off), one every
            `eval_every` steps plus the final weights (EMA's when on); evaluated as `swa/<key>`, it
            becomes `checkpoints/best` when it beats the best evaluation.
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
        reset_optimizer: on a resume, take the weights, EMA/SWA, step, data position and RNG from the
            checkpoint but start AdamW's moments afresh, on this run's schedule at the checkpoint's
            step; the optimiser's settings (`vmmlib.fit_args.OPTIMIZER_ARGS`: lr, warmup, schedule,
            ...) may then differ from the checkpoint's (Chinese-CLIP's `--reset-optimizer`). The
            fingerprint must still match: a notebook's run folder pins its parameters.
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
    f = _prepare(model, train_loader, Path(out_dir), args)
    batches, resumed_from = _start(f, train_loader, args)
    state, optimizer = f.state, f.optimizer
    bar = progress_bar(
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
            if eval_every and step % eval_every == 0:
                _evaluation_step(f)
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
    adversary: FGM | PGD | None
    swa: SWA | None
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
    if args["metric"] is not None and args["eval_fn"] is None:
        raise ValueError(f"metric={args['metric']!r} needs an eval_fn")
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
    # The scheduler is not prepared: Accelerate's wrapper steps num_processes times per call; we step once.
    optimizer, scheduler = make_optimizer(
        model, **{k: args[k] for k in inspect.signature(make_optimizer).parameters if k in args and k != "model"},
        fused=accelerator.device.type == "cuda",
    )  # fmt: skip
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


def _train_step(f: _Fit, objective: Callable, batch: Any) -> float | None:
    """One forward/backward/optimiser step; returns the loss, or None when the step was skipped.

    A step whose loss, grad norm or buffers are non-finite is skipped: no optimiser or EMA update,
    and the buffers the forward pass wrote (BatchNorm running statistics) are restored.
    """
    state, args = f.state, f.args
    buffers = list(f.unwrapped.buffers())
    saved_buffers = [b.detach().clone() for b in buffers]  # small: norm statistics, position ids
    terms, loss = _loss_backward(f, objective, batch)
    if f.adversary is not None:  # FGM / PGD: more forward + backward passes on perturbed embeddings
        adv_loss = f.adversary.attack(lambda: _loss_backward(f, objective, batch)[1])
        terms = {**terms, "adv_loss": adv_loss}
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
        after_step = getattr(f.unwrapped, "after_optimizer_step", None)
        if after_step is not None:  # the model's own constraint (CLIP's logit-scale clamp), EMA sees it
            after_step()
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


def _loss_backward(f: _Fit, objective: Callable, batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The objective's terms and their sum, after its backward pass (gradients accumulate)."""
    if getattr(objective, "backward_inside", False):  # e.g. contrastive accumulation over cached features
        terms = objective(f.model, batch, backward=f.accelerator.backward)
        return terms, sum_terms({k: v.detach() for k, v in terms.items()})
    terms = objective(f.model, batch)
    loss = sum_terms(terms)
    f.accelerator.backward(loss)
    return terms, loss.detach()


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


def _evaluation_step(f: _Fit) -> None:
    """Every `eval_every` steps: evaluate (with an `eval_fn`) and add the evaluated weights (EMA's when
    on) to SWA's snapshots (with SWA)."""
    if f.args["eval_fn"] is not None:
        _evaluate(f)
    if f.swa is not None:
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
