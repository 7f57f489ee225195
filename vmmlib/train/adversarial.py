"""Adversarial training on the word-embedding table: FGM and PGD as WBDC 2022 rank 8 runs them (SPEC §4.5).

Both perturb the *weights* of the matched embedding parameters (not the embedded sequence) along
their gradient, run the objective's forward and backward again so the adversarial gradient adds to
the clean one, and restore the weights before the optimiser step.

- `FGM` (Miyato et al., "Adversarial Training Methods for Semi-Supervised Text Classification",
  2017): one step `r = ε · g / ‖g‖₂` (ε = 1.0).
- `PGD` (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", 2018): K
  steps of `α · g / ‖g‖₂`, each projected back onto the ε-ball (per parameter, L2) around the clean
  weights (K = 3, ε = 1.0, α = 0.3). The clean gradients are kept aside during the first K-1 passes
  and restored before the last, so the step uses clean + last adversarial gradient.

A norm of 0 or NaN skips that parameter's step, as in the seed. `embedding_params` picks the
parameters by a regular expression searched in their names (default "word_embeddings": the text
word-embedding table of BERT-style models; the video embeddings are not matched).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ADVERSARIAL", "FGM", "PGD", "build_adversary", "embedding_params"]

ADVERSARIAL = ("none", "fgm", "pgd")

Pass = Callable[[], torch.Tensor]  # runs the objective's forward + backward again; returns its loss


def embedding_params(model: nn.Module, pattern: str) -> list[nn.Parameter]:
    """The trainable parameters of `model` whose names match `pattern` (`re.search`).

    Raises:
        ValueError: nothing matches; the message names the model's embedding parameters.
    """
    matched = [p for n, p in model.named_parameters() if p.requires_grad and re.search(pattern, n)]
    if not matched:
        embeddings = [n for n, _ in model.named_parameters() if "embed" in n.lower()]
        raise ValueError(
            f"adv_param_pattern={pattern!r} matches no trainable parameter; the model's embedding "
            f"parameters: {embeddings or 'none'}"
        )
    return matched


def _unit_step(p: nn.Parameter, size: float) -> None:
    """p += size · g / ‖g‖ (skipped when the gradient is missing or its norm is 0 / NaN), decided on
    the device: no host sync."""
    if p.grad is None:
        return
    g = p.grad.float()
    norm = torch.linalg.vector_norm(g)
    ok = (norm != 0) & ~torch.isnan(norm)
    p.add_(torch.where(ok, size * g / norm, 0.0).to(p.dtype))


class FGM:
    """Fast gradient method on `params` with radius `epsilon`."""

    def __init__(self, params: list[nn.Parameter], epsilon: float = 1.0):
        self.params, self.epsilon = params, epsilon

    def attack(self, again: Pass) -> torch.Tensor:
        """Perturb, call `again` (forward + backward, gradients accumulate), restore; its loss."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p in self.params:
                _unit_step(p, self.epsilon)
        try:
            return again()
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)


class PGD:
    """Projected gradient descent on `params`: `steps` steps of size `alpha` inside the `epsilon` ball.

    `all_params` are the parameters whose gradients the optimiser uses (kept aside and restored).
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        all_params: list[nn.Parameter],
        epsilon: float = 1.0,
        alpha: float = 0.3,
        steps: int = 3,
    ):
        self.params, self.all_params = params, all_params
        self.epsilon, self.alpha, self.steps = epsilon, alpha, steps

    @torch.no_grad()
    def _project(self, p: nn.Parameter, clean: torch.Tensor) -> None:
        r = (p - clean).float()
        norm = torch.linalg.vector_norm(r)
        projected = (clean.float() + self.epsilon * r / norm).to(p.dtype)
        p.copy_(torch.where(norm > self.epsilon, projected, p))  # decided on the device: no host sync

    def attack(self, again: Pass) -> torch.Tensor:
        """K perturb-and-backward passes (gradients as in the module docstring), restore; the last loss."""
        clean = [p.detach().clone() for p in self.params]
        grads = [None if p.grad is None else p.grad.detach().clone() for p in self.all_params]
        try:
            for t in range(self.steps):
                with torch.no_grad():
                    for p, c in zip(self.params, clean):
                        _unit_step(p, self.alpha)
                        self._project(p, c)
                for p, g in zip(self.all_params, grads):
                    p.grad = g.clone() if t == self.steps - 1 and g is not None else None
                loss = again()
            return loss
        finally:
            with torch.no_grad():
                for p, c in zip(self.params, clean):
                    p.copy_(c)


def build_adversary(
    kind: str | None,
    model: nn.Module,
    all_params: list[nn.Parameter],
    *,
    epsilon: float,
    alpha: float,
    steps: int,
    pattern: str,
) -> FGM | PGD | None:
    """`fit`'s adversary: None for "none"/None, else FGM or PGD on the parameters matching `pattern`.

    Raises:
        ValueError: an unknown `kind` (naming `ADVERSARIAL`) or a pattern matching nothing.
    """
    if kind in (None, "", "none"):
        return None
    if kind not in ADVERSARIAL:
        raise ValueError(f"adversarial={kind!r}; valid choices: {', '.join(ADVERSARIAL)}")
    params = embedding_params(model, pattern)
    if kind == "fgm":
        return FGM(params, epsilon)
    return PGD(params, all_params, epsilon, alpha, steps)
