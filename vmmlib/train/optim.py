"""The optimiser side of `fit`: AdamW parameter groups (with layer-wise learning-rate decay), the
learning-rate schedule, an EMA of the weights and SWA over the last evaluated weights.

- `param_groups`: backbone vs the rest, each split into decayed and not decayed (AdamW, Loshchilov &
  Hutter, 2019), and by transformer depth with `layer_lr_decay` (`layer_depth`; Clark et al.,
  ELECTRA, 2020; Sun et al., "How to Fine-Tune BERT for Text Classification?", 2019).
- `lr_multiplier`: warmup + linear / cosine / constant decay as `transformers.get_scheduler` computes
  it, and TF's staircase `exponential_decay` (seed 003).
- `EMA`: the exponential moving average of the WBDC 2022 rank-8 code (SPEC 4.5).
- `SWA`: the mean of the weights at the last N snapshot steps (Izmailov et al., "Averaging Weights
  Leads to Wider Optima and Better Generalization", 2018), as WBDC 2022 top teams used (SPEC 9.1).
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "EMA",
    "LAYER_PATTERN",
    "SCHEDULES",
    "SWA",
    "layer_depth",
    "lr_multiplier",
    "make_optimizer",
    "param_groups",
]

SCHEDULES = ("linear", "cosine", "constant", "exponential")
# "<stack>.layer.<i>." (transformers' BertEncoder, LxmertEncoder) or "<stack>.layers.<i>." (CLIP's encoder)
LAYER_PATTERN = re.compile(r"^(.*?)(?:^|\.)layers?\.(\d+)\.")


# --------------------------------------------------------------------------- optimiser and schedule


def layer_depth(names: list[str]) -> dict[str, int]:
    """Depth from the top of each parameter name, for layer-wise learning-rate decay.

    - A transformer layer `<stack>.layer.<i>.` or `<stack>.layers.<i>.` of a stack of n layers (n =
      the largest i + 1 under that same `<stack>` prefix): depth n - i, so each stack's top layer is 1.
      Stacks are numbered separately (e.g. `bert.encoder` and `video_encoder` both end at depth 1).
    - A name containing `embeddings` (word, position, type, video embeddings and their LayerNorm):
      depth (the deepest stack's n) + 1, the bottom.
    - Everything else (classifier, pooler, projection heads, LXMERT `cross.<i>` layers, free
      parameters such as a CLS vector): depth 0, the full rate.
    """
    found = {n: LAYER_PATTERN.match(n) for n in names}
    stacks: dict[str, int] = {}
    for m in found.values():
        if m is not None:
            stacks[m.group(1)] = max(stacks.get(m.group(1), 0), int(m.group(2)) + 1)
    bottom = max(stacks.values(), default=0) + 1
    depth = {}
    for name, m in found.items():
        if m is not None:
            depth[name] = stacks[m.group(1)] - int(m.group(2))
        else:
            depth[name] = bottom if "embeddings" in name else 0
    return depth


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    backbone_lr: float | None = None,
    backbone_prefixes: tuple[str, ...] = ("text.",),
    layer_lr_decay: float | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: backbone vs the rest, each split into decayed and not decayed.

    A parameter is "backbone" if its name starts with one of `backbone_prefixes` and `backbone_lr` is
    set; it then gets `backbone_lr`, the others `lr`. Parameters with fewer than 2 dimensions (biases,
    LayerNorm/BatchNorm weights, the embeddings' LayerNorm) get no weight decay. Frozen parameters
    (requires_grad False) are left out. Empty groups are dropped.

    With `layer_lr_decay` (a factor in (0, 1]; 0/None: off) each group is split further by
    `layer_depth` d and gets its base rate × `layer_lr_decay ** d`: the head keeps the full rate, each
    stack's top transformer layer × decay, the embeddings the smallest rate.

    Returns:
        dicts with "name" ("backbone" or "others", plus "/depth<d>" with layer decay), "role"
        ("backbone" or "others"), "depth", "params", "param_names", "lr", "weight_decay".

    Raises:
        ValueError: if `backbone_lr` is set but no parameter name matches `backbone_prefixes`.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depths = layer_depth([n for n, _ in named]) if layer_lr_decay else dict.fromkeys((n for n, _ in named), 0)
    buckets: dict[tuple[str, int, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, p in named:
        is_backbone = backbone_lr is not None and name.startswith(tuple(backbone_prefixes))
        key = ("backbone" if is_backbone else "others", depths[name], p.ndim >= 2)
        buckets.setdefault(key, []).append((name, p))
    if backbone_lr is not None and not any(k[0] == "backbone" for k in buckets):
        raise ValueError(
            f"backbone_lr={backbone_lr} is set but no trainable parameter name starts with "
            f"{tuple(backbone_prefixes)}; first names: {[n for n, _ in model.named_parameters()][:5]}"
        )
    groups = []
    for role, depth, decay in sorted(buckets, key=lambda k: (k[0] != "backbone", k[1], not k[2])):
        members = buckets[(role, depth, decay)]
        base = backbone_lr if role == "backbone" else lr
        groups.append(
            {
                "name": f"{role}/depth{depth}" if layer_lr_decay else role,
                "role": role,
                "depth": depth,
                "params": [p for _, p in members],
                "param_names": [n for n, _ in members],
                "lr": base * (layer_lr_decay**depth if layer_lr_decay else 1.0),
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


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    steps: int,
    weight_decay: float,
    backbone_lr: float | None,
    backbone_prefixes: tuple[str, ...],
    layer_lr_decay: float | None,
    adam_eps: float,
    warmup_steps: int,
    backbone_warmup_steps: int | None,
    schedule: str,
    schedule_steps: int | None,
    decay_rate: float,
    fused: bool = False,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """`fit`'s AdamW over `param_groups` and its per-group `LambdaLR` of `lr_multiplier` (the options
    marked `optimizer` in `vmmlib.train.config.FitConfig`, which holds their defaults and meanings; 0/None
    backbone_lr, layer_lr_decay, schedule_steps: off)."""
    groups = param_groups(
        model, lr=lr, weight_decay=weight_decay, backbone_lr=backbone_lr or None,
        backbone_prefixes=backbone_prefixes, layer_lr_decay=layer_lr_decay,
    )  # fmt: skip
    optimizer = torch.optim.AdamW(groups, lr=lr, eps=adam_eps, fused=fused)
    backbone_warmup = warmup_steps if backbone_warmup_steps is None else backbone_warmup_steps
    multipliers = [
        functools.partial(
            lr_multiplier,
            warmup_steps=backbone_warmup if g["role"] == "backbone" else warmup_steps,
            total_steps=schedule_steps or steps,
            schedule=schedule,
            decay_rate=decay_rate,
        )
        for g in groups
    ]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, multipliers)


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
    def update(self, model: nn.Module, ok: torch.Tensor | None = None) -> None:
        """One EMA step; with `ok` (a bool tensor) only where it is True, decided on the device."""
        shadows, params = self._pairs(model)
        if ok is not None:
            before = [s.clone() for s in shadows]
            self.update(model)
            for s, b in zip(shadows, before):
                s.copy_(torch.where(ok, s, b))
            return
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


# --------------------------------------------------------------------------- SWA


class SWA:
    """Stochastic weight averaging over the last `n` snapshots of the weights.

    `fit` takes a snapshot (the EMA's weights when it is on) every `swa_every` steps (0: `eval_every`);
    at the end the final weights count as one more unless the last step was a snapshot step, and the
    mean of the last `n` is the final model. Floating tensors (parameters and float buffers such as
    BatchNorm statistics) are averaged in fp32; integer buffers come from the final weights.
    """

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"swa_last must be >= 1, got {n}")
        self.n = n
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}  # step -> floating state, oldest first

    @torch.no_grad()
    def add(self, step: int, state: Mapping[str, torch.Tensor]) -> bool:
        """Keep a copy of the floating tensors of `state` (a model's state_dict) taken at `step`.

        Weights holding NaN/inf are left out with a RuntimeWarning (returns False).
        """
        if not all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point()):
            warnings.warn(f"step {step}: non-finite weights left out of SWA", RuntimeWarning, stacklevel=3)
            return False
        self.snapshots[step] = {k: t.detach().clone() for k, t in state.items() if t.is_floating_point()}
        for old in sorted(self.snapshots)[: -self.n]:
            del self.snapshots[old]
        return True

    @torch.no_grad()
    def average(
        self, step: int, state: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[int]]:
        """The mean of the last `n` snapshots, counting `state` at `step` as the newest one.

        Returns:
            (a state dict like `state`: averaged floating tensors, the rest as in `state`; the steps
            averaged).
        """
        chosen = {**self.snapshots, step: state}
        steps = sorted(chosen)[-self.n :]
        out = dict(state)
        for k, t in state.items():
            if t.is_floating_point():
                mean = torch.stack([chosen[s][k].float() for s in steps]).mean(0)
                out[k] = mean.to(t.dtype)
        return out, steps

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat `{"<step>/<name>": tensor}` (safetensors-ready)."""
        return {f"{s}/{k}": t.contiguous() for s, snap in self.snapshots.items() for k, t in snap.items()}

    def load_state_dict(self, flat: Mapping[str, torch.Tensor]) -> None:
        self.snapshots = {}
        for key, t in flat.items():
            s, name = key.split("/", 1)
            self.snapshots.setdefault(int(s), {})[name] = t.clone()
        self.snapshots = dict(sorted(self.snapshots.items()))


def position_scheduler(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Move a fresh `LambdaLR` to `step` without stepping through the ones before (a resume with a
    reset optimiser): each group's lr becomes its base lr × its multiplier at `step`."""
    scheduler.last_epoch = step - 1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
        scheduler.step()  # → last_epoch = step, lrs from the multipliers
