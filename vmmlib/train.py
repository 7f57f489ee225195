"""`fit()`: one explicit training loop on Hugging Face Accelerate (CPU, one GPU, or several under
`accelerate launch` / `torchrun`), with exact resume.

What lives here:
- `fit`: AdamW (Loshchilov & Hutter, 2019) with a backbone learning rate, warmup + linear/cosine decay
  as `transformers.get_scheduler` computes it (per group, so the seed-000 recipe's 2,000-step BERT
  warmup and 1,000-step head warmup over a 40k-step horizon can be reproduced), gradient clipping,
  bf16 autocast on GPU, an EMA of the weights as in the WBDC 2022 rank-8 code (SPEC 4.5), periodic
  evaluation with best-checkpoint selection, a NaN/inf guard, atomic checkpoints and `history.csv`.
- `param_groups`, `lr_multiplier`, `EMA`: the pieces `fit` uses, public so notebooks and tests can
  inspect them.
- re-exported from `vmmlib.checkpoint`: `make_loader` / `EpochShuffleSampler` (a DataLoader whose order
  depends only on (seed, epoch)), `save_weights` / `load_weights` (safetensors, atomic, strict).

Exact resume: a run killed at step k and resumed ends with bit-identical weights on CPU. `fit`
restores model, optimiser, scheduler, EMA and RNG states, re-seeds the sampler for the epoch and skips
the batches already consumed (`accelerate.skip_first_batches`). Randomness drawn *inside* a dataset's
`__getitem__` (augmentation) is resumed exactly only if it is derived from (epoch, index), e.g. via a
`set_epoch` method on the dataset; `fit` calls `set_epoch(epoch)` on the dataset and the sampler.
Stopping on purpose with `steps=k` and continuing with `steps=N` is exact only with
`schedule_steps=N` in both calls (the decay horizon defaults to `steps`).

Checkpoint layout under `out_dir`:

    model.safetensors                 final weights (EMA weights when ema_decay is set)
    history.csv                       one row per logged/evaluated step
    checkpoints/last/                 model.safetensors (raw weights), optimizer.pt, scheduler.pt,
                                      ema.safetensors (if EMA), rng.pt (one entry per process),
                                      history.json, state.json (written last: marks completeness)
    checkpoints/best/                 model.safetensors (EMA weights when set) + best.json
"""

from __future__ import annotations

import functools
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.data_loader import skip_first_batches
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vmmlib.checkpoint import (
    EpochShuffleSampler,
    capture_rng_state,
    clear_fit_outputs,
    find_checkpoint,
    history_frame,
    load_training_checkpoint,
    load_weights,
    make_loader,
    restore_rng_state,
    rng_preserved,
    save_best_checkpoint,
    save_training_checkpoint,
    save_weights,
    start_epoch,
    write_history_csv,
)

__all__ = [
    "EMA",
    "EpochShuffleSampler",
    "FitResult",
    "fit",
    "load_weights",
    "lr_multiplier",
    "make_loader",
    "param_groups",
    "save_weights",
]

logger = logging.getLogger(__name__)

SCHEDULES = ("linear", "cosine", "constant", "exponential")
_END = object()  # sentinel: the epoch's iterator is exhausted
_NONE = object()  # sentinel: no batch fetched ahead


@dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        history: one row per logged or evaluated step (the content of `history.csv`).
        best_metric: best value of `metric` seen, or None without `metric`.
        best_step: step of `best_metric`, or None.
        last_step: the step training ended at (== `steps`).
        resumed_from: the checkpoint step this call resumed from, or None for a fresh run.
        paths: "out_dir", "model", "history", "last" and, when written, "best".
    """

    history: pd.DataFrame
    best_metric: float | None
    best_step: int | None
    last_step: int
    resumed_from: int | None
    paths: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------- optimiser and schedule


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    backbone_lr: float | None = None,
    backbone_prefixes: tuple[str, ...] = ("text.",),
) -> list[dict[str, Any]]:
    """AdamW parameter groups: backbone vs the rest, each split into decayed and not decayed.

    A parameter is "backbone" if its name starts with one of `backbone_prefixes` and `backbone_lr` is
    set; it then gets `backbone_lr`, the others `lr`. Parameters with fewer than 2 dimensions (biases,
    LayerNorm/BatchNorm weights, the embeddings' LayerNorm) get no weight decay. Frozen parameters
    (requires_grad False) are left out. Empty groups are dropped.

    Returns:
        dicts with "name" ("backbone" or "others"), "params", "param_names", "lr", "weight_decay".

    Raises:
        ValueError: if `backbone_lr` is set but no parameter name matches `backbone_prefixes`.
    """
    buckets: dict[tuple[str, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_backbone = backbone_lr is not None and name.startswith(tuple(backbone_prefixes))
        key = ("backbone" if is_backbone else "others", p.ndim >= 2)
        buckets.setdefault(key, []).append((name, p))
    if backbone_lr is not None and not any(k[0] == "backbone" for k in buckets):
        raise ValueError(
            f"backbone_lr={backbone_lr} is set but no trainable parameter name starts with "
            f"{tuple(backbone_prefixes)}; first names: {[n for n, _ in model.named_parameters()][:5]}"
        )
    groups = []
    for group_name in ("backbone", "others"):
        for decay in (True, False):
            named = buckets.get((group_name, decay), [])
            if named:
                groups.append(
                    {
                        "name": group_name,
                        "params": [p for _, p in named],
                        "param_names": [n for n, _ in named],
                        "lr": backbone_lr if group_name == "backbone" else lr,
                        "weight_decay": weight_decay if decay else 0.0,
                    }
                )
    return groups


def lr_multiplier(
    step: int, *, warmup_steps: int, total_steps: int, schedule: str, decay_rate: float = 0.9
) -> float:
    """Factor applied to a group's base lr after `step` optimiser steps (transformers' formulas).

    Linear warmup `step / warmup_steps`, then "linear" `(total - step) / (total - warmup)`, "cosine"
    `0.5 * (1 + cos(pi * progress))`, "constant" 1, or "exponential" `decay_rate ** ((step - warmup)
    // total_steps)` — TF's staircase `exponential_decay`, where `total_steps` is the decay interval
    (seed 003: ×0.9 every 4M examples = 31,250 steps of 128). Past `total_steps` linear and cosine stay at 0
    (transformers' cosine would rise again). The optimiser's first step uses `step = 0`, so with
    warmup it moves nothing, as in `transformers.get_scheduler` and TF `create_optimizer`.
    """
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))
    if schedule == "cosine":
        progress = min(1.0, float(step - warmup_steps) / float(max(1, total_steps - warmup_steps)))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if schedule == "exponential":
        return float(decay_rate) ** ((step - warmup_steps) // max(1, total_steps))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


# --------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of the trainable parameters (WBDC 2022 rank-8 `ema_util.py`).

    `shadow <- decay * shadow + (1 - decay) * theta` after every optimiser step, in fp32. Buffers
    (BatchNorm statistics) are not averaged. `applied(model)` swaps the shadow in and restores the
    raw weights on exit.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {
            name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params = dict(model.named_parameters())
        return [self.shadow[n] for n in self.shadow], [params[n] for n in self.shadow]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        shadows, params = self._pairs(model)
        if all(p.dtype == torch.float32 for p in params):
            torch._foreach_mul_(shadows, self.decay)
            torch._foreach_add_(shadows, [p.detach() for p in params], alpha=1.0 - self.decay)
        else:
            for s, p in zip(shadows, params):
                s.mul_(self.decay).add_(p.detach().float(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for s, p in zip(*self._pairs(model)):
            p.copy_(s)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        _, params = self._pairs(model)
        backup = [p.detach().clone() for p in params]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise KeyError(
                f"EMA state keys differ from the model's: {sorted(set(state) ^ set(self.shadow))[:5]}"
            )
        for n, t in state.items():
            self.shadow[n].copy_(t)


# --------------------------------------------------------------------------- fit


def _resolve_mixed_precision(mixed_precision: str) -> str:
    if mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if mixed_precision in ("no", "bf16"):
        return mixed_precision
    raise ValueError(f"mixed_precision must be 'auto', 'no' or 'bf16', got {mixed_precision!r}")


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
    schedule_steps: int | None = None,
    decay_rate: float = 0.9,
    adam_eps: float = 1e-8,
    grad_clip: float | None = 1.0,
    ema_decay: float | None = None,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    eval_every: int = 0,
    metric: str | None = None,
    greater_is_better: bool = True,
    save_every: int = 0,
    resume: bool = True,
    max_nonfinite_steps: int = 5,
    mixed_precision: str = "auto",
    seed: int = 0,
    log_every: int = 10,
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
            (DDP-wrapped when distributed): call it, unwrap it only to reach attributes.
        steps: optimiser steps in total, counting those done before a resume.
        lr: peak learning rate of the non-backbone groups.
        out_dir: run folder for checkpoints, history.csv and model.safetensors.
        backbone_lr: peak lr of parameters whose names start with `backbone_prefixes` (None: `lr`).
        backbone_prefixes: name prefixes of backbone parameters, e.g. ("text.",).
        weight_decay: AdamW decoupled weight decay; 0 for parameters with fewer than 2 dims.
        warmup_steps: linear warmup steps of the non-backbone groups.
        backbone_warmup_steps: warmup of the backbone groups (None: `warmup_steps`).
        schedule: "linear" | "cosine" | "constant" after warmup.
        schedule_steps: horizon of the decay (None: `steps`); seed 000 decays over 40k but stops at 3-4k.
            For "exponential" it is the decay interval.
        decay_rate: factor per `schedule_steps` of the "exponential" schedule.
        adam_eps: AdamW epsilon (WBDC rank-8 uses 1e-6).
        grad_clip: max global grad norm (None: no clipping; the norm is still computed and logged).
        ema_decay: keep an EMA of the weights with this decay; evaluation, the best checkpoint and the
            final model use it.
        eval_fn: `eval_fn(model) -> {"metric": float}`, run in eval mode under no_grad every
            `eval_every` steps and at the end. It runs on every process; the main process's dict is
            used, so under DDP it should compute the full-validation metric there (e.g. with
            `accelerator.gather_for_metrics`). RNG states are restored after it.
        eval_every: evaluate every this many steps (0: only at the end).
        metric: key of `eval_fn`'s dict that selects `checkpoints/best` (None: no best checkpoint).
        greater_is_better: direction of `metric`.
        save_every: write `checkpoints/last` every this many steps (0: only at the end).
        resume: continue from `out_dir/checkpoints/last` if it exists; False deletes what an earlier
            fit wrote in `out_dir` and starts over.
        max_nonfinite_steps: raise after this many consecutive steps whose loss or grad norm is NaN/inf
            (each one is skipped with a RuntimeWarning; the schedule still advances).
        mixed_precision: "auto" (bf16 on a bf16-capable GPU, else "no"), "no" or "bf16".
        seed: seeds python/numpy/torch (+ process index) and plain RandomSamplers per epoch.
        log_every: add a history row every this many steps, averaging the finite steps since the
            previous row (0: only at the last step). The last step of a call always gets a row.
        progress: show a tqdm bar with the running loss (main process only).
        accelerator: an existing `Accelerator` (default: a new one with `mixed_precision`).

    Returns:
        FitResult. Its history (and history.csv) has the columns step, epoch, lr/<group> (the rate the
        optimiser used at that step), train/loss, train/<term>, train/grad_norm (means over the finite
        steps since the previous row), train/skipped (non-finite steps in that window) and eval/<key>.

    Raises:
        RuntimeError: after `max_nonfinite_steps` consecutive non-finite steps, or when weights to be
            saved are non-finite.
        ValueError: on inconsistent arguments, or a checkpoint beyond `steps`.
    """
    _check_fit_args(steps, lr, schedule, warmup_steps, eval_every, save_every, log_every, max_nonfinite_steps)
    if metric is not None and eval_fn is None:
        raise ValueError(f"metric={metric!r} needs an eval_fn")
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    precision = _resolve_mixed_precision(mixed_precision)
    if accelerator is None:
        accelerator = Accelerator(mixed_precision=precision)
    elif mixed_precision != "auto" and accelerator.mixed_precision != precision:
        raise ValueError(
            f"mixed_precision={mixed_precision!r}; the accelerator uses {accelerator.mixed_precision!r}"
        )
    is_main, world = accelerator.is_main_process, accelerator.num_processes
    if world == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        warnings.warn(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but the Accelerator runs one process: every process "
            "would train alone and write the same out_dir (on CPU, pass Accelerator(cpu=True))",
            RuntimeWarning,
            stacklevel=2,
        )
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoints"
    paths = {"out_dir": out_dir, "model": out_dir / "model.safetensors", "history": out_dir / "history.csv"}
    paths["last"] = ckpt / "last"
    set_seed(seed, device_specific=True)

    model.to(accelerator.device)  # before the optimiser: fused AdamW checks devices at construction
    groups = param_groups(
        model, lr=lr, weight_decay=weight_decay, backbone_lr=backbone_lr, backbone_prefixes=backbone_prefixes
    )
    optimizer = torch.optim.AdamW(groups, lr=lr, eps=adam_eps, fused=accelerator.device.type == "cuda")
    warmup_of = {
        "others": warmup_steps,
        "backbone": warmup_steps if backbone_warmup_steps is None else backbone_warmup_steps,
    }
    horizon = steps if schedule_steps is None else schedule_steps
    multipliers = [
        functools.partial(
            lr_multiplier,
            warmup_steps=warmup_of[g["name"]],
            total_steps=horizon,
            schedule=schedule,
            decay_rate=decay_rate,
        )
        for g in groups
    ]
    # Not prepared: Accelerate's scheduler wrapper steps num_processes times per call; we step once.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multipliers)
    model, optimizer, loader = accelerator.prepare(model, optimizer, train_loader)
    unwrapped = accelerator.unwrap_model(model)
    ema = EMA(unwrapped, ema_decay) if ema_decay is not None else None

    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,  # data position: batches of `epoch` already consumed
        "best_metric": None,
        "best_step": None,
        "nonfinite_in_a_row": 0,
        "last_eval_step": None,
        "window": _empty_window(),  # sums over the steps since the last history row
        "seed": seed,
        "num_processes": world,
    }
    rows: list[dict[str, Any]] = []
    rng_states = None
    last_dir = find_checkpoint(ckpt / "last", marker="state.json") if resume else None
    if last_dir is not None:
        loaded = load_training_checkpoint(last_dir, model=unwrapped, optimizer=optimizer, scheduler=scheduler)
        state, rows, rng_states = loaded["state"], loaded["history_rows"], loaded["rng_states"]
        if ema is not None:
            if loaded["ema_state"] is None:
                raise FileNotFoundError(f"ema_decay is set but {last_dir} has no ema.safetensors")
            ema.load_state_dict(loaded["ema_state"])
        if state["step"] > steps:
            raise ValueError(
                f"{last_dir} is at step {state['step']} > steps={steps}; raise steps or resume=False"
            )
        if state["seed"] != seed or state["num_processes"] != world:
            warnings.warn(
                f"resuming a run made with seed={state['seed']} on {state['num_processes']} processes "
                f"with seed={seed} on {world}: the result will not be exact",
                RuntimeWarning,
                stacklevel=2,
            )
        logger.info("resuming from %s at step %d", last_dir, state["step"])
        if is_main:  # drop rows a killed run logged after its last checkpoint
            write_history_csv(rows, paths["history"])
    elif not resume and is_main:
        clear_fit_outputs(out_dir)
    accelerator.wait_for_everyone()
    resumed_from = last_save_step = state["step"] if last_dir is not None else None

    def evaluate() -> None:
        step = state["step"]
        with rng_preserved(), ema.applied(unwrapped) if ema is not None else nullcontext():
            model.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in eval_fn(unwrapped).items()}
            model.train()
            if world > 1:
                metrics = broadcast_object_list([metrics])[0]
            _row(rows, step, state["epoch"]).update({f"eval/{k}": v for k, v in metrics.items()})
            state["last_eval_step"] = step
            if metric is not None and metric not in metrics:
                raise KeyError(f"metric {metric!r} is not among eval_fn's keys {sorted(metrics)}")
            value, best = (metrics[metric] if metric else math.nan), state["best_metric"]
            better = best is None or (value > best if greater_is_better else value < best)
            if math.isfinite(value) and better:
                state["best_metric"], state["best_step"] = value, step
                if is_main:
                    save_best_checkpoint(
                        ckpt / "best", unwrapped, step=step, metric=metric, value=value,
                        greater_is_better=greater_is_better,
                    )  # fmt: skip
                accelerator.wait_for_everyone()
        if is_main:
            write_history_csv(rows, paths["history"])

    def save_last() -> None:
        rng_all = [capture_rng_state()]
        if world > 1:
            rng_all = gather_object(rng_all)
        if is_main:
            save_training_checkpoint(
                ckpt / "last", model=unwrapped, optimizer=optimizer, scheduler=scheduler,
                ema_state=ema.state_dict() if ema is not None else None, rng_states=rng_all,
                state=state, history_rows=rows,
            )  # fmt: skip
            write_history_csv(rows, paths["history"])
        accelerator.wait_for_everyone()

    # Mid-epoch resume: start the skipping iterator and fetch its first batch *before* restoring the
    # RNG states. Whatever a loader draws from the global RNG when an iterator starts (the worker base
    # seed, when it has no generator) was drawn by the uninterrupted run at the start of the epoch,
    # before the checkpoint's RNG state was taken; drawing it after the restore would shift dropout.
    source, it, pending = loader, None, _NONE
    if last_dir is not None and state["batch_in_epoch"] > 0 and state["step"] < steps:
        start_epoch(train_loader, state["epoch"], seed=seed, prepared=loader)
        source = skip_first_batches(loader, state["batch_in_epoch"])
        it = iter(source)
        pending = next(it, _END)
    if rng_states is not None:
        restore_rng_state(rng_states[min(accelerator.process_index, len(rng_states) - 1)])

    show = progress and is_main
    bar = tqdm(total=steps, initial=state["step"], desc="fit", disable=not show, dynamic_ncols=True)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    running = None  # smoothed loss for the progress bar only
    model.train()
    optimizer.zero_grad(set_to_none=True)
    try:
        while state["step"] < steps:
            if pending is not _NONE:
                batch, pending = pending, _NONE
            else:
                if it is None:
                    start_epoch(train_loader, state["epoch"], seed=seed, prepared=loader)
                    source, it = loader, iter(loader)
                batch = next(it, _END)
            if batch is _END:
                if state["batch_in_epoch"] == 0:
                    raise ValueError("train_loader yielded no batches")
                state["epoch"], state["batch_in_epoch"], it = state["epoch"] + 1, 0, None
                continue
            state["batch_in_epoch"] += 1
            state["step"] = step = state["step"] + 1

            terms = objective(model, batch)
            loss = _sum_terms(terms)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(params, math.inf if grad_clip is None else grad_clip)
            if grad_norm is None:  # DeepSpeed clips inside its engine
                grad_norm = torch.zeros(())
            values = torch.stack(
                [loss.detach(), grad_norm.detach().float().to(loss.device)]
                + [t.detach().float().reshape(()) for t in terms.values()]
            )
            if world > 1:  # every process then takes the same skip decision
                values = accelerator.reduce(values, reduction="mean")
            loss_value, norm_value, *term_values = values.tolist()
            lrs = {f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups}  # the rates of this step
            if math.isfinite(loss_value) and math.isfinite(norm_value):
                optimizer.step()
                if ema is not None:
                    ema.update(unwrapped)
                state["nonfinite_in_a_row"] = 0
                logged = {"loss": loss_value, **dict(zip(terms, term_values)), "grad_norm": norm_value}
                _accumulate(state["window"], logged)
                running = loss_value if running is None else 0.98 * running + 0.02 * loss_value
            else:
                state["nonfinite_in_a_row"] += 1
                state["window"]["skipped"] += 1
                last_terms = dict(zip(terms, term_values), grad_norm=norm_value)
                if state["nonfinite_in_a_row"] >= max_nonfinite_steps:
                    raise RuntimeError(
                        f"loss was non-finite for {state['nonfinite_in_a_row']} consecutive steps at step "
                        f"{step}; last terms: {last_terms}"
                    )
                warnings.warn(
                    f"step {step}: non-finite loss or grad norm, optimiser step skipped; terms: {last_terms}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()

            if (log_every and step % log_every == 0) or step == steps:
                _row(rows, step, state["epoch"]).update({**lrs, **_window_means(state["window"])})
                state["window"] = _empty_window()
            bar.update(1)
            if running is not None:
                bar.set_postfix(loss=f"{running:.4g}", refresh=False)
            if eval_fn is not None and eval_every and step % eval_every == 0:
                evaluate()
            if save_every and step % save_every == 0:
                save_last()
                last_save_step = step
    finally:
        bar.close()
        if it is not None:
            it.close()
        if hasattr(source, "end"):  # an abandoned Accelerate iterator stays registered otherwise
            source.end()

    if eval_fn is not None and state["last_eval_step"] != state["step"]:
        evaluate()
    if last_save_step != state["step"]:
        save_last()
    if ema is not None:
        ema.copy_to(unwrapped)  # the model leaves fit holding the weights of model.safetensors
    if is_main:
        save_weights(unwrapped, paths["model"])
        write_history_csv(rows, paths["history"])
    accelerator.wait_for_everyone()
    if (ckpt / "best").is_dir():
        paths["best"] = ckpt / "best"
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # undo Accelerate's autocast forward wrapper
    return FitResult(
        history=history_frame(rows),
        best_metric=state["best_metric"],
        best_step=state["best_step"],
        last_step=state["step"],
        resumed_from=resumed_from,
        paths=paths,
    )


def _check_fit_args(
    steps, lr, schedule, warmup_steps, eval_every, save_every, log_every, max_nonfinite_steps
):
    if steps < 1 or lr <= 0:
        raise ValueError(f"need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if min(warmup_steps, eval_every, save_every, log_every) < 0 or max_nonfinite_steps < 1:
        raise ValueError(
            "warmup_steps, eval_every, save_every, log_every must be >= 0; max_nonfinite_steps >= 1"
        )


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


def _empty_window() -> dict[str, Any]:
    return {"n": 0, "skipped": 0, "sums": {}}


def _accumulate(window: dict[str, Any], values: Mapping[str, float]) -> None:
    window["n"] += 1
    for k, v in values.items():
        window["sums"][k] = window["sums"].get(k, 0.0) + v


def _window_means(window: dict[str, Any]) -> dict[str, float]:
    """`train/<name>` means over the finite steps of the window, and the count of skipped steps."""
    n = window["n"]
    means = {f"train/{k}": (s / n if n else math.nan) for k, s in window["sums"].items()}
    return {**means, "train/skipped": window["skipped"]}


def _row(rows: list[dict[str, Any]], step: int, epoch: int) -> dict[str, Any]:
    """The history row of `step`, appended if missing (steps only grow, so it can only be the last)."""
    if not rows or rows[-1]["step"] != step:
        rows.append({"step": step, "epoch": epoch})
    return rows[-1]
