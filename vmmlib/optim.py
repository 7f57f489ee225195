"""The optimiser side of `fit`: AdamW parameter groups, the learning-rate schedule and an EMA of the
weights.

- `param_groups`: backbone vs the rest, each split into decayed and not decayed (AdamW, Loshchilov &
  Hutter, 2019).
- `lr_multiplier`: warmup + linear / cosine / constant decay as `transformers.get_scheduler` computes
  it, and TF's staircase `exponential_decay` (seed 003).
- `EMA`: the exponential moving average of the WBDC 2022 rank-8 code (SPEC 4.5).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["EMA", "SCHEDULES", "lr_multiplier", "param_groups"]

SCHEDULES = ("linear", "cosine", "constant", "exponential")


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
